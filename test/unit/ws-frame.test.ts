import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { GraphqlWebSocket, textFrame } from '../../src/infra/ws-server.js';
import { waitFor, withTimeout } from '../helpers/clients.js';

/**
 * GraphqlWebSocket.sendFrame and textFrame (src/infra/ws-server.ts): a frame built whole by the
 * caller, written to the TCP socket at once, as a real `ws` client reads it; in order with what
 * ws itself sends; refused (false) while ws would not write at once (compression negotiated).
 */

const servers: { http: Server; wss: WebSocketServer }[] = [];
const clients: WebSocket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.terminate();
  for (const { http, wss } of servers.splice(0)) {
    for (const s of wss.clients) s.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
    await new Promise((resolve) => http.close(resolve));
  }
});

/** A server socket and a client connected to it; `perMessageDeflate` offered and accepted when true. */
async function connect(perMessageDeflate = false): Promise<{ server: GraphqlWebSocket; client: WebSocket; received: string[] }> {
  const http = createServer();
  const wss = new WebSocketServer({ server: http, WebSocket: GraphqlWebSocket, perMessageDeflate });
  servers.push({ http, wss });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  const accepted = new Promise<GraphqlWebSocket>((resolve) => wss.once('connection', (s: GraphqlWebSocket) => resolve(s)));
  const client = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate });
  clients.push(client);
  const received: string[] = [];
  client.on('message', (data, isBinary) => received.push(isBinary ? `binary:${String(data)}` : String(data)));
  await withTimeout(new Promise((resolve) => client.once('open', resolve)), 5000, 'client open');
  return { server: await withTimeout(accepted, 5000, 'server connection'), client, received };
}

/** The frame of `text`, as the socket sink builds it: header from textFrame, payload written after it. */
function frameOf(text: string): Buffer {
  const bytes = Buffer.byteLength(text);
  const frame = textFrame(bytes);
  frame.write(text, frame.length - bytes);
  return frame;
}

const waitForCount = (received: string[], n: number) => waitFor(() => received.length >= n, 5000, `${n} messages`);

describe('textFrame', () => {
  it.each([
    [0, 2],
    [125, 2],
    [126, 4],
    [65535, 4],
    [65536, 10],
  ])('should give a %i-byte payload a %i-byte header of RFC 6455', (bytes, header) => {
    const frame = textFrame(bytes);
    expect(frame.length).toBe(header + bytes);
    expect(frame[0]).toBe(0x81); // FIN, text
    if (header === 2) expect(frame[1]).toBe(bytes);
    if (header === 4) expect([frame[1], frame.readUInt16BE(2)]).toEqual([126, bytes]);
    if (header === 10) expect([frame[1], frame.readUInt32BE(2), frame.readUInt32BE(6)]).toEqual([127, 0, bytes]);
  });
});

describe('GraphqlWebSocket.sendFrame', () => {
  it('should deliver messages of every header size, multi-byte text included, in order with what ws sends itself', async () => {
    const { server, received } = await connect();
    const texts = ['', 'é'.repeat(62) + 'x', 'a'.repeat(126), '€'.repeat(21845), 'b'.repeat(65536), `{"id":"1","payload":${'"z"'.repeat(30000)}}`];
    const written: string[] = [];
    for (const [i, text] of texts.entries()) {
      const done = new Promise<void>((resolve, reject) => {
        const sent = server.sendFrame(frameOf(text), (err) => (err ? reject(err) : resolve()));
        expect(sent).toBe(true);
      });
      written.push(text);
      // ws' own send between frames: the order on the wire is the order of the calls.
      server.send(`ws ${i}`);
      written.push(`ws ${i}`);
      await withTimeout(done, 5000, `write callback ${i}`);
    }
    await waitForCount(received, written.length);
    expect(received).toEqual(written);
  });

  it('should answer false once the socket is closing', async () => {
    const { server, client } = await connect();
    const closed = new Promise((resolve) => client.once('close', resolve));
    server.close(1000, 'bye');
    expect(server.sendFrame(frameOf('late'))).toBe(false);
    await withTimeout(closed, 5000, 'close');
  });

  it('should answer false, writing nothing, when compression was negotiated (ws frames those itself)', async () => {
    const { server, received } = await connect(true);
    expect(server.sendFrame(frameOf('not like this'))).toBe(false);
    server.send('compressed by ws');
    await waitForCount(received, 1);
    expect(received).toEqual(['compressed by ws']);
  });
});

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { App } from '../../src/app.js';
import {
  MeDocument,
  MessagesBudgetDocument,
  RoomsBudgetDocument,
  RoomsEveryListDocument,
  type MessagesBudgetQuery,
  type RoomsBudgetQuery,
} from '../generated/graphql.js';
import { gql, gqlTraced, wsClient } from '../helpers/clients.js';
import { startInstance, tokenFor, uid, uniquePrefix, waitForStreams, type TestInstance } from '../helpers/server.js';
import { viewer } from '../helpers/wiring.js';

/**
 * Round-trip budgets, measured through `X-Debug-Redis: 1` (every Redis command the operation sent,
 * a pipeline counting once): the rooms list and a page of history cost a fixed number of round
 * trips whatever the page size, because every loader of a tick shares one pipeline.
 */

const traced = gqlTraced;

describe('when the viewer has 100 rooms, each with messages and present members', () => {
  let server: TestInstance;
  let app: App;
  const alice = uid('alice');
  const bob = uid('bob');
  let aliceToken: string;
  let bobToken: string;
  let ws: ReturnType<typeof wsClient>;
  const roomIds: string[] = [];

  beforeAll(async () => {
    server = await startInstance({ REDIS_KEY_PREFIX: uniquePrefix('budgets') });
    app = server.app;
    aliceToken = await tokenFor(alice, { name: 'Alice' });
    bobToken = await tokenFor(bob, { name: 'Bob' });
    const { rooms, messages } = app.services;
    for (let i = 0; i < 100; i++) {
      const room = await rooms.create(viewer(alice), { name: `room ${i}`, memberIds: [bob] });
      roomIds.push(room.id);
      await messages.send(viewer(bob), { roomId: room.id, text: `hello from bob ${i}` });
    }
    // Bob is present in the 30 most recent rooms (a subscription holds each).
    ws = wsClient(server.wsUrl, bobToken);
    for (const roomId of roomIds.slice(-30)) {
      ws.subscribe({ query: 'subscription ($r: ID!) { typing(roomId: $r) { roomId } }', variables: { r: roomId } }, {
        next: () => undefined,
        error: () => undefined,
        complete: () => undefined,
      });
    }
    await waitForStreams(server, 30);
  });
  afterAll(async () => {
    await ws?.dispose();
    await server?.stop();
  });

  it('should answer rooms(first: 20) and rooms(first: 100) with the same round trips, at most 5', async () => {
    const small = await traced(server.url, RoomsBudgetDocument, { first: 20 }, aliceToken);
    const large = await traced(server.url, RoomsBudgetDocument, { first: 100 }, aliceToken);
    const edges = (d: RoomsBudgetQuery) => d.rooms.edges;
    expect(edges(small.data)).toHaveLength(20);
    expect(edges(large.data)).toHaveLength(100);
    for (const { node } of edges(large.data)) {
      expect(node.lastMessage?.sender.name).toBe('Bob');
      expect(node.unreadCount).toBe(1);
    }
    // The latest rooms are first, and Bob is present in them.
    expect(edges(small.data)[0]?.node.onlineMembers.map((u) => u.name)).toEqual(['Bob']);
    console.log(`rooms: first 20 ${JSON.stringify(small.redis)}, first 100 ${JSON.stringify(large.redis)}`);
    expect(small.redis.roundTrips).toBeLessThanOrEqual(5);
    expect(large.redis.roundTrips).toBe(small.redis.roundTrips);
  });

  it('should answer messages(last: 50) and messages(last: 100) with the same round trips, at most 4', async () => {
    const roomId = roomIds[0] as string;
    const { messages, receipts } = app.services;
    let lastId = '';
    for (let i = 0; i < 120; i++) {
      const m = await messages.send(viewer(i % 2 === 0 ? alice : bob), { roomId, text: `message ${i}` });
      lastId = Buffer.from(`${roomId}:${m.epoch}:${m.seq}`).toString('base64url');
    }
    await receipts.markRead(viewer(bob), roomId, lastId, false);
    await receipts.markRead(viewer(alice), roomId, lastId, false);
    const small = await traced(server.url, MessagesBudgetDocument, { roomId, last: 50 }, aliceToken);
    const large = await traced(server.url, MessagesBudgetDocument, { roomId, last: 100 }, aliceToken);
    const edges = (d: MessagesBudgetQuery) => d.messages.edges;
    expect(edges(small.data)).toHaveLength(50);
    expect(edges(large.data)).toHaveLength(100);
    for (const { node } of edges(large.data)) {
      expect(['Alice', 'Bob']).toContain(node.sender.name);
      // Bob is connected (his WebSocket); Alice is not.
      expect(node.sender.presence.status).toBe(node.sender.name === 'Bob' ? 'ONLINE' : 'OFFLINE');
      // Both read everything: each message is read by the member who did not send it.
      expect(node.readCount).toBe(1);
    }
    console.log(`messages: last 50 ${JSON.stringify(small.redis)}, last 100 ${JSON.stringify(large.redis)}`);
    expect(small.redis.roundTrips).toBeLessThanOrEqual(4);
    expect(large.redis.roundTrips).toBe(small.redis.roundTrips);
  });

  it('should keep every list field of a page of rooms at a fixed number of round trips', async () => {
    const small = await traced(server.url, RoomsEveryListDocument, { first: 20 }, aliceToken);
    const large = await traced(server.url, RoomsEveryListDocument, { first: 100 }, aliceToken);
    expect(large.data.rooms.edges).toHaveLength(100);
    for (const { node } of large.data.rooms.edges) {
      expect(node.members.edges.map((e) => e.node.name).sort()).toEqual(['Alice', 'Bob']);
      expect(node.messages.edges.length).toBeGreaterThan(0);
      expect(node.owner.name).toBe('Alice');
    }
    console.log(`rooms with every list: first 20 ${JSON.stringify(small.redis)}, first 100 ${JSON.stringify(large.redis)}`);
    expect(large.redis.roundTrips).toBe(small.redis.roundTrips);
    expect(large.redis.roundTrips).toBeLessThanOrEqual(5);
  });

  it('should count a pipeline once and every command in it', async () => {
    const { redis } = await traced(server.url, MeDocument, {}, aliceToken);
    // `me { name presence }`: the viewer's name comes from their token (which the request stores), so
    // only their presence (HMGET, SCARD) is read, in one pipeline; the write of the viewer's user,
    // which nothing waits for, apart.
    expect(redis).toEqual({ roundTrips: 1, commands: 2, cache: { hits: 0, misses: 0 }, unawaited: { roundTrips: 1, commands: 1 } });
  });

  it('should add nothing to a response without the header', async () => {
    const r = await gql(server.url, MeDocument, {}, { token: aliceToken });
    expect((r.body as { extensions?: unknown }).extensions).toBeUndefined();
  });
});

describe('when the server runs in production', () => {
  let server: TestInstance;
  beforeAll(async () => {
    server = await startInstance({
      NODE_ENV: 'production',
      REDIS_KEY_PREFIX: uniquePrefix('budgets-prod'),
      LOG_LEVEL: 'silent',
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('should ignore X-Debug-Redis', async () => {
    const token = await tokenFor(uid('prod'));
    const r = await gql(server.url, MeDocument, {}, { token, headers: { 'X-Debug-Redis': '1' } });
    expect(r.errors).toBeUndefined();
    expect((r.body as { extensions?: unknown }).extensions).toBeUndefined();
  });
});

import { createPublicKey, diffieHellman, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Redis } from 'ioredis';
import { TokenVerifier } from 'livekit-server-sdk';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { callKeySignedText } from '../../src/calls/calls.crypto.js';
import { callKeys } from '../../src/calls/calls.keys.js';
import { loadConfig } from '../../src/config.js';
import { freePort, startRedisServer } from '../../src/infra/embedded-redis.js';
import {
  CallKeysDocument,
  EndCallDocument,
  JoinCallDocument,
  LeaveCallDocument,
  OnCallEventsDocument,
  PublishCallKeyDocument,
  RegisterIdentityKeyDocument,
  RemoveMemberDocument,
  RoomCallDocument,
  SendMessageDocument,
  UserIdentityKeyDocument,
  type CallFieldsFragment,
  type OnCallEventsSubscription,
} from '../generated/graphql.js';
import { clientPool, createRoomAs, expectError, gql, gqlOk, subscribe, waitFor, type Subscription } from '../helpers/clients.js';
import { startLiveKitStandin, type LiveKitStandin } from '../helpers/livekit-standin.js';
import { deletePrefixed } from '../helpers/lua.js';
import { monitorRedis } from '../helpers/monitor.js';
import {
  sharedRedisUrl,
  startCluster,
  startInstance,
  testEnv,
  testUsers,
  uniquePrefix,
  waitForStreamsReleased,
  type TestInstance,
} from '../helpers/server.js';

/**
 * Calls end to end, on two instances sharing one Redis and a LiveKit stand-in speaking Twirp JSON:
 * joinCall tokens (checked with the SDK's TokenVerifier), webhooks signed as LiveKit signs them,
 * reconciliation with ListParticipants, leave/end/departure/removal, and the ephemeral media keys
 * (signatures, rotation, TTL, end-to-end key agreement between two clients).
 */

const REKEY_MS = 300;
const CALL_ENV = {
  CALL_REKEY_WINDOW_MS: String(REKEY_MS),
  CALL_DEPARTURE_TIMEOUT_MS: '500',
  CALL_SYNC_STALE_MS: '400',
  CALL_PARTICIPANTS_CACHE_MS: '200',
  CALL_SYNC_INTERVAL_MS: '0',
  PRESENCE_TICK_MS: '100',
};

const users = testUsers();
const pool = clientPool();
const prefix = uniquePrefix('calls');
let standin: LiveKitStandin;
let a: TestInstance;
let b: TestInstance;
let redis: Redis;
const stopLater: TestInstance[] = [];
const prefixes = [prefix];

beforeAll(async () => {
  standin = await startLiveKitStandin();
  [a, b] = (await startCluster(2, { ...standin.env, ...CALL_ENV, REDIS_KEY_PREFIX: prefix })) as [TestInstance, TestInstance];
  standin.webhookUrl = `${a.base}/webhooks/livekit`;
  redis = new Redis(sharedRedisUrl(), { keyPrefix: prefix });
});
afterEach(async () => {
  await pool.disposeAll();
  await waitForStreamsReleased([a, b]);
  standin.delayMs = 0;
  standin.down = false;
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), ...stopLater.map((i) => i.stop())]);
  await standin?.close();
  redis?.disconnect();
  await Promise.all(prefixes.map(deletePrefixed));
});

/** A room owned by `owner` with `members`. */
const roomOf = (owner: string, members: string[], inst = a) =>
  createRoomAs(inst.url, users.token(owner), members, { label: 'calls' });
const joinCall = async (inst: TestInstance, userId: string, roomId: string) =>
  (await gqlOk(inst.url, JoinCallDocument, { roomId }, users.token(userId))).joinCall;
const roomCall = async (inst: TestInstance, userId: string, roomId: string) =>
  (await gqlOk(inst.url, RoomCallDocument, { id: roomId }, users.token(userId))).room?.call ?? null;
const idsOf = (call: CallFieldsFragment | null | undefined) => (call?.participants ?? []).map((p) => p.user.id).sort();
/** Runs `test` with a third instance of the cluster configured with `env` on top, stopped after it. */
async function withInstance(env: Record<string, string>, test: (inst: TestInstance) => Promise<void>) {
  const inst = await startInstance({ ...standin.env, ...CALL_ENV, ...env, REDIS_KEY_PREFIX: prefix });
  try {
    await test(inst);
  } finally {
    await inst.stop();
  }
}
const twirpCalls = (method: string, room: string) => standin.requests.filter((r) => r.method === method && r.room === room);

type Events = Subscription<OnCallEventsSubscription>;
/** A roomEvents subscription of `userId`, live server-side when this resolves. */
async function events(inst: TestInstance, userId: string, roomId: string): Promise<Events> {
  const before = inst.app.services.events.openCount();
  const sub = subscribe(pool.open(inst.wsUrl, users.token(userId)), OnCallEventsDocument, { roomId });
  await waitFor(() => inst.app.services.events.openCount() > before, 5000, `${userId}'s roomEvents stream`);
  return sub;
}
type RoomEvent = OnCallEventsSubscription['roomEvents'];
type CallUpdated = Extract<RoomEvent, { __typename: 'CallUpdated' }>;
const callUpdates = (sub: Events) =>
  sub.results.map((r) => r.data?.roomEvents).filter((e): e is CallUpdated => e?.__typename === 'CallUpdated');
/** Waits for a CallUpdated matching `pred` on `sub`. */
const callUpdate = (sub: Events, pred: (e: CallUpdated) => boolean, what: string, ms = 5000) =>
  waitFor(() => callUpdates(sub).find(pred), ms, what);

/** A client's long-term identity key pair, with its public key registered. */
async function identityOf(userId: string, inst = a) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(publicKey);
  await gqlOk(inst.url, RegisterIdentityKeyDocument, { publicKey: raw }, users.token(userId));
  return { publicKey: raw, privateKey };
}
/** The base64 of a raw 32-byte OKP public key. */
const rawPublicKey = (key: KeyObject) => Buffer.from(key.export({ format: 'jwk' }).x as string, 'base64url').toString('base64');
const okpKey = (base64: string, crv: 'Ed25519' | 'X25519') =>
  createPublicKey({ key: { kty: 'OKP', crv, x: Buffer.from(base64, 'base64').toString('base64url') }, format: 'jwk' });

/** A fresh X25519 media key pair and the publish input signed by `identity` for (room, call, epoch). */
function mediaKey(identity: KeyObject, roomId: string, callId: string, epoch: number, keyId = 'k1') {
  const pair = generateKeyPairSync('x25519');
  const publicKey = rawPublicKey(pair.publicKey);
  const signature = sign(null, Buffer.from(callKeySignedText(roomId, callId, epoch, keyId, publicKey)), identity).toString('base64');
  return { pair, input: { keyId, publicKey, signature } };
}

/** A debug-level logger whose lines a test reads (what a leaked timer would log when it fails). */
function captureLogger() {
  const lines: { msg?: string }[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as { msg?: string });
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

/** Posts `body` to the LiveKit webhook endpoint of `inst` as LiveKit would, with `init` on top. */
const postWebhook = async (inst: TestInstance, init: RequestInit & { duplex?: 'half' }) => {
  const res = await fetch(`${inst.base}/webhooks/livekit`, { ...init, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, allow: res.headers.get('allow'), body: (await res.json()) as unknown };
};

describe('when LiveKit is not configured', () => {
  it('should answer NOT_CONFIGURED to voice operations and keep serving the rest', async () => {
    const plainPrefix = uniquePrefix('calls-off');
    const plain = await startInstance({ REDIS_KEY_PREFIX: plainPrefix });
    stopLater.push(plain);
    prefixes.push(plainPrefix);
    const owner = await users.newUser('owner');
    const token = users.token(owner);
    const roomId = await createRoomAs(plain.url, token, [], { label: 'calls-off' });
    expectError(await gql(plain.url, JoinCallDocument, { roomId }, { token }), 'NOT_CONFIGURED');
    expectError(await gql(plain.url, LeaveCallDocument, { roomId }, { token }), 'NOT_CONFIGURED');
    expectError(await gql(plain.url, EndCallDocument, { roomId }, { token }), 'NOT_CONFIGURED');
    expectError(await gql(plain.url, CallKeysDocument, { roomId }, { token }), 'NOT_CONFIGURED');
    const { room } = await gqlOk(plain.url, RoomCallDocument, { id: roomId }, token);
    expect(room).toEqual({ id: roomId, call: null });
    await gqlOk(plain.url, SendMessageDocument, { input: { roomId, text: 'still here' } }, token);
    const hook = await fetch(`${plain.base}/webhooks/livekit`, { method: 'POST', body: '{}', headers: { authorization: 'x' } });
    expect(hook.status).toBe(503);
  });
});

describe('when members join a call', () => {
  it('should start the call once and hand each a LiveKit token for the room that the SDK verifies', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const roomId = await roomOf(alice, [bob]);
    const watcher = await events(b, bob, roomId);
    const first = await joinCall(a, alice, roomId);
    expect(first.url).toBe(standin.url);
    expect(first.call).toMatchObject({ roomId, epoch: 0, endedAt: null });
    expect(idsOf(first.call)).toEqual([alice]);
    const claims = await new TokenVerifier(standin.apiKey, standin.apiSecret).verify(first.token);
    expect(claims).toMatchObject({
      sub: alice,
      name: 'alice',
      video: { room: roomId, roomJoin: true, canPublish: true, canSubscribe: true },
    });
    expect((claims.exp ?? 0) - (claims.nbf ?? 0)).toBe(300);
    await expect(new TokenVerifier(standin.apiKey, 'another-secret').verify(first.token)).rejects.toThrow();

    const second = await joinCall(b, bob, roomId);
    expect(second.call.id).toBe(first.call.id);
    expect(idsOf(second.call)).toEqual([alice, bob].sort());
    expect(idsOf(await roomCall(b, alice, roomId))).toEqual([alice, bob].sort());
    await callUpdate(watcher, (e) => idsOf(e.call).length === 2, 'CallUpdated with both participants');
  });

  it('should refuse non-members and missing rooms', async () => {
    const [owner, stranger] = [await users.newUser('owner'), await users.newUser('stranger')];
    const roomId = await roomOf(owner, []);
    expectError(await gql(a.url, JoinCallDocument, { roomId }, { token: users.token(stranger) }), 'FORBIDDEN');
    expectError(await gql(a.url, JoinCallDocument, { roomId: 'no-such-room' }, { token: users.token(owner) }), 'NOT_FOUND');
    expectError(await gql(a.url, RoomCallDocument, { id: roomId }, { token: users.token(stranger) }), 'FORBIDDEN');
  });
});

describe('when LiveKit posts webhooks', () => {
  it('should answer 401 to a missing, forged or tampered signature and change nothing', async () => {
    const owner = await users.newUser('owner');
    const roomId = await roomOf(owner, []);
    const event = standin.event('participant_joined', roomId, { identity: owner });
    expect((await standin.send(event, { authorization: null })).status).toBe(401);
    expect((await standin.send(event, { secret: 'not-the-secret' })).status).toBe(401);
    expect((await standin.send(event, { tamper: true })).status).toBe(401);
    expect((await standin.send(event, { authorization: 'Bearer nonsense' })).status).toBe(401);
    expect(await roomCall(a, owner, roomId)).toBeNull();
    // The same event, signed properly, is applied: the refusals were about the signature.
    expect(await standin.send(event)).toEqual({ status: 200, body: { ok: true, outcome: 'applied' } });
    expect(idsOf(await roomCall(a, owner, roomId))).toEqual([owner]);
  });

  it('should start the call from participant_joined, announce it on both instances, and apply an event id once', async () => {
    const [alice, bob, carol] = [await users.newUser('alice'), await users.newUser('bob'), await users.newUser('carol')];
    const roomId = await roomOf(alice, [bob, carol]);
    const watcher = await events(b, bob, roomId);
    await standin.connect(roomId, alice);
    await callUpdate(watcher, (e) => idsOf(e.call).includes(alice), 'CallUpdated for alice joining');
    await standin.connect(roomId, carol);
    const replay = standin.event('participant_left', roomId, { identity: carol });
    expect((await standin.send(replay)).body).toMatchObject({ outcome: 'applied' });
    expect((await standin.send(replay)).body).toMatchObject({ outcome: 'duplicate' });
    await callUpdate(watcher, (e) => e.rekey, 'the rekey after carol left');
    const lists = callUpdates(watcher).filter((e) => !e.rekey).map((e) => idsOf(e.call));
    expect(lists).toEqual([[alice], [alice, carol].sort(), [alice]]);
  });

  it('should end the call on room_finished and ignore a late join of that LiveKit session', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const roomId = await roomOf(alice, [bob]);
    const watcher = await events(a, bob, roomId);
    const { roomSid } = await standin.connect(roomId, alice);
    const lateJoin = standin.event('participant_joined', roomId, { identity: bob, roomSid });
    expect((await standin.send(standin.event('room_finished', roomId, { roomSid }))).status).toBe(200);
    const ended = await callUpdate(watcher, (e) => e.call.endedAt !== null, 'CallUpdated announcing the end');
    expect(ended.call.participants).toEqual([]);
    expect((await standin.send(lateJoin)).body).toMatchObject({ outcome: 'unchanged' });
    expect(await roomCall(b, alice, roomId)).toBeNull();
  });

  it('should ask LiveKit to remove someone who connects without being a member', async () => {
    const [owner, outsider] = [await users.newUser('owner'), await users.newUser('outsider')];
    const roomId = await roomOf(owner, []);
    await standin.connect(roomId, outsider);
    await waitFor(() => twirpCalls('RemoveParticipant', roomId).some((r) => r.identity === outsider), 5000, 'RemoveParticipant');
    expect(await roomCall(a, owner, roomId)).toBeNull();
  });
});

describe('when a request to /webhooks/livekit is not one LiveKit sends', () => {
  /** A participant_joined for a fresh room, signed as LiveKit signs it: applied if it got through. */
  async function signedJoin(pad = 0) {
    const owner = await users.newUser('owner');
    const roomId = await roomOf(owner, []);
    const event = standin.event('participant_joined', roomId, { identity: owner });
    if (pad > 0 && event.participant) event.participant.metadata = 'x'.repeat(pad);
    const body = event.toJsonString();
    return { owner, roomId, body, authorization: await standin.sign(body) };
  }

  it('should answer 405 with Allow: POST to any other method, and apply nothing', async () => {
    const { owner, roomId, body, authorization } = await signedJoin();
    expect(await postWebhook(a, { method: 'GET', headers: { authorization } })).toEqual({
      status: 405,
      allow: 'POST',
      body: { error: 'POST only' },
    });
    for (const method of ['PUT', 'PATCH', 'DELETE']) {
      const res = await postWebhook(a, { method, body, headers: { authorization, 'content-type': 'application/webhook+json' } });
      expect(res, method).toEqual({ status: 405, allow: 'POST', body: { error: 'POST only' } });
    }
    expect(await roomCall(a, owner, roomId)).toBeNull();
  });

  it('should answer 413 to a signed body over MAX_BODY_BYTES, apply nothing, and keep serving', async () => {
    // Default MAX_BODY_BYTES (1 MiB): the metadata alone is over it.
    const { owner, roomId, body, authorization } = await signedJoin(1_048_576);
    const res = await postWebhook(a, { method: 'POST', body, headers: { authorization, 'content-type': 'application/webhook+json' } });
    expect(res.status).toBe(413);
    expect(res.body).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
    expect(await roomCall(a, owner, roomId)).toBeNull();
    const event = standin.event('participant_joined', roomId, { identity: owner });
    expect(await standin.send(event)).toEqual({ status: 200, body: { ok: true, outcome: 'applied' } });
  });

  it('should answer 411 to a signed body streamed without a Content-Length, and apply nothing', async () => {
    const { owner, roomId, body, authorization } = await signedJoin();
    const bytes = new TextEncoder().encode(body);
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        // Two chunks: Transfer-Encoding: chunked, no Content-Length.
        controller.enqueue(bytes.subarray(0, 10));
        controller.enqueue(bytes.subarray(10));
        controller.close();
      },
    });
    const res = await postWebhook(a, {
      method: 'POST',
      body: stream,
      duplex: 'half',
      headers: { authorization, 'content-type': 'application/webhook+json' },
    });
    expect(res.status).toBe(411);
    expect(res.body).toMatchObject({ errors: [{ extensions: { code: 'BAD_USER_INPUT' } }] });
    expect(await roomCall(a, owner, roomId)).toBeNull();
  });
});

describe('when Redis is away as LiveKit posts a webhook', () => {
  it('should answer 503 without applying it, and apply its redelivery once Redis is back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'switchboard-calls-outage-'));
    const port = await freePort();
    let own = await startRedisServer({ dir, port, appendOnly: true });
    const inst = await startInstance({ ...standin.env, ...CALL_ENV, REDIS_URL: own.url, REDIS_KEY_PREFIX: uniquePrefix('calls-outage') });
    try {
      const url = `${inst.base}/webhooks/livekit`;
      const owner = await users.newUser('owner');
      const roomId = await roomOf(owner, [], inst);
      await standin.connect(roomId, owner, { webhooks: false });
      const event = standin.event('participant_joined', roomId, { identity: owner });

      await own.stop();
      const t0 = Date.now();
      expect(await standin.send(event, { url })).toEqual({ status: 503, body: { error: 'not applied' } });
      expect(Date.now() - t0).toBeLessThan(3000);

      own = await startRedisServer({ dir, port, appendOnly: true });
      await waitFor(async () => (await fetch(`${inst.base}/ready`)).status === 200, 10_000, '/ready to answer 200 again');
      // Not remembered as seen: LiveKit's redelivery of the same event id is applied.
      expect(await standin.send(event, { url })).toEqual({ status: 200, body: { ok: true, outcome: 'applied' } });
      expect(idsOf(await roomCall(inst, owner, roomId))).toEqual([owner]);
      expect(await standin.send(event, { url })).toEqual({ status: 200, body: { ok: true, outcome: 'duplicate' } });
    } finally {
      await inst.stop();
      await own.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('when the participant lists of LiveKit and webhooks disagree', () => {
  it('should let a read of a stale call sync with ListParticipants, keeping joiners who are still connecting', async () => {
    const [alice, bob, carol] = [await users.newUser('alice'), await users.newUser('bob'), await users.newUser('carol')];
    const roomId = await roomOf(alice, [bob, carol]);
    await joinCall(a, alice, roomId);
    // LiveKit has bob and carol, but their participant_joined never arrived.
    await standin.connect(roomId, bob, { webhooks: false });
    await standin.connect(roomId, carol, { webhooks: false });
    await waitFor(async () => idsOf(await roomCall(b, alice, roomId)).length === 3, 5000, 'the read to sync bob and carol in');
    // carol's participant_left never arrives either.
    await standin.disconnect(roomId, carol, { webhooks: false });
    const call = await waitFor(async () => {
      const c = await roomCall(a, bob, roomId);
      return idsOf(c).includes(carol) ? null : c;
    }, 5000, 'the read to sync carol out');
    expect(idsOf(call)).toEqual([alice, bob].sort());
  });

  it('should ask LiveKit once for many concurrent reads on both instances', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const roomId = await roomOf(alice, [bob]);
    await standin.connect(roomId, alice);
    await waitFor(async () => (await roomCall(a, alice, roomId)) !== null, 5000, 'the call');
    // Make the call stale and the cache empty, and LiveKit slow enough for the reads to overlap.
    await redis.hset(callKeys.call(roomId), 'syncedAt', 0);
    await redis.del(callKeys.participantList(roomId));
    standin.delayMs = 150;
    const before = twirpCalls('ListParticipants', roomId).length;
    const reads = await Promise.all(
      Array.from({ length: 12 }, (_, i) => roomCall(i % 2 ? a : b, i % 3 ? alice : bob, roomId)),
    );
    expect(reads.every((c) => idsOf(c).join() === alice)).toBe(true);
    expect(twirpCalls('ListParticipants', roomId).length - before).toBe(1);
  });

  it('should sync active calls periodically without any read', async () => {
    await withInstance({ CALL_SYNC_INTERVAL_MS: '200' }, async () => {
      const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
      const roomId = await roomOf(alice, [bob]);
      const watcher = await events(a, alice, roomId);
      await joinCall(a, alice, roomId);
      await standin.connect(roomId, bob, { webhooks: false });
      await callUpdate(watcher, (e) => idsOf(e.call).includes(bob), 'a CallUpdated from the periodic sync');
    });
  });
});

describe('when participants leave', () => {
  it('should remove the leaver from the call and LiveKit, then rotate the epoch', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const roomId = await roomOf(alice, [bob]);
    const watcher = await events(b, alice, roomId);
    await joinCall(a, alice, roomId);
    await standin.connect(roomId, bob);
    expect((await gqlOk(b.url, LeaveCallDocument, { roomId }, users.token(bob))).leaveCall).toBe(true);
    expect(twirpCalls('RemoveParticipant', roomId).map((r) => r.identity)).toEqual([bob]);
    expect(standin.identities(roomId)).toEqual([]);
    const rekey = await callUpdate(watcher, (e) => e.rekey, 'the rekey CallUpdated');
    expect(rekey.call.epoch).toBe(1);
    expect(idsOf(rekey.call)).toEqual([alice]);
    expect((await gqlOk(b.url, LeaveCallDocument, { roomId }, users.token(bob))).leaveCall).toBe(true);
  });

  it('should end a call whose last participant left after the departure timeout', async () => {
    const alice = await users.newUser('alice');
    const roomId = await roomOf(alice, []);
    const watcher = await events(a, alice, roomId);
    await joinCall(b, alice, roomId);
    await gqlOk(b.url, LeaveCallDocument, { roomId }, users.token(alice));
    await callUpdate(watcher, (e) => e.call.endedAt !== null, 'the end of the empty call', 5000);
    expect(await roomCall(a, alice, roomId)).toBeNull();
    expect(await redis.exists(callKeys.call(roomId), callKeys.participants(roomId))).toBe(0);
  });

  it('should take a member removed from the room out of its call and out of LiveKit', async () => {
    const [owner, bob, carol] = [await users.newUser('owner'), await users.newUser('bob'), await users.newUser('carol')];
    const roomId = await roomOf(owner, [bob, carol]);
    const watcher = await events(a, carol, roomId);
    await standin.connect(roomId, owner);
    await standin.connect(roomId, bob);
    await standin.connect(roomId, carol);
    await gqlOk(b.url, RemoveMemberDocument, { roomId, userId: bob }, users.token(owner));
    await waitFor(() => twirpCalls('RemoveParticipant', roomId).some((r) => r.identity === bob), 5000, 'RemoveParticipant of bob');
    const rekey = await callUpdate(watcher, (e) => e.rekey, 'the rekey after the removal');
    expect(idsOf(rekey.call)).toEqual([carol, owner].sort());
    expect(standin.identities(roomId)).toEqual([carol, owner].sort());
  });

  it('should let only the owner end the call for everyone', async () => {
    const [owner, bob] = [await users.newUser('owner'), await users.newUser('bob')];
    const roomId = await roomOf(owner, [bob]);
    const watcher = await events(b, bob, roomId);
    await standin.connect(roomId, owner);
    await standin.connect(roomId, bob);
    expectError(await gql(a.url, EndCallDocument, { roomId }, { token: users.token(bob) }), 'FORBIDDEN');
    expect(standin.identities(roomId)).toEqual([bob, owner].sort());
    expect((await gqlOk(a.url, EndCallDocument, { roomId }, users.token(owner))).endCall).toBe(true);
    expect(twirpCalls('DeleteRoom', roomId)).toHaveLength(1);
    await callUpdate(watcher, (e) => e.call.endedAt !== null, 'the end of the call');
    expect(await roomCall(b, bob, roomId)).toBeNull();
    expect((await gqlOk(a.url, EndCallDocument, { roomId }, users.token(owner))).endCall).toBe(false);
  });
});

describe('when the owner ends a call while LiveKit cannot be reached', () => {
  it('should answer UNAVAILABLE while LiveKit answers errors, end nothing, and end the call once LiveKit is back', async () => {
    const [owner, bob, carol] = [await users.newUser('owner'), await users.newUser('bob'), await users.newUser('carol')];
    const roomId = await roomOf(owner, [bob, carol]);
    const watcher = await events(b, bob, roomId);
    await standin.connect(roomId, owner);
    await standin.connect(roomId, bob);
    const call = await waitFor(async () => {
      const c = await roomCall(a, owner, roomId);
      return idsOf(c).length === 2 ? c : null;
    }, 5000, 'the call with owner and bob');

    standin.down = true;
    const deletes = twirpCalls('DeleteRoom', roomId).length;
    expectError(await gql(a.url, EndCallDocument, { roomId }, { token: users.token(owner) }), 'UNAVAILABLE');
    expect(twirpCalls('DeleteRoom', roomId)).toHaveLength(deletes + 1);
    // Nothing ended: not in LiveKit, not in Redis, not for readers on either instance.
    expect(standin.identities(roomId)).toEqual([bob, owner].sort());
    expect(await redis.hget(callKeys.call(roomId), 'id')).toBe(call.id);
    for (const [inst, userId] of [[a, owner], [b, bob]] as const) {
      const read = await roomCall(inst, userId, roomId);
      expect(read).toMatchObject({ id: call.id, epoch: call.epoch, endedAt: null });
      expect(idsOf(read)).toEqual([bob, owner].sort());
    }
    // carol joining is announced after whatever the failed endCall published (one publisher, one
    // channel): once her CallUpdated is in, an end would have been seen before it.
    await joinCall(a, carol, roomId);
    await callUpdate(watcher, (e) => idsOf(e.call).includes(carol), 'the CallUpdated of carol joining');
    expect(callUpdates(watcher).filter((e) => e.call.endedAt !== null)).toEqual([]);

    standin.down = false;
    expect((await gqlOk(a.url, EndCallDocument, { roomId }, users.token(owner))).endCall).toBe(true);
    const ended = await callUpdate(watcher, (e) => e.call.endedAt !== null, 'the end of the call');
    expect(ended.call.id).toBe(call.id);
    expect(standin.identities(roomId)).toEqual([]);
  });

  it('should answer UNAVAILABLE promptly when LiveKit refuses connections or does not answer in time', async () => {
    const deadUrl = `http://127.0.0.1:${await freePort()}`;
    const unreachable: Record<string, string>[] = [{ LIVEKIT_URL: deadUrl }, { LIVEKIT_REQUEST_TIMEOUT_MS: '300' }];
    for (const env of unreachable) {
      await withInstance(env, async (inst) => {
        const [owner, bob] = [await users.newUser('owner'), await users.newUser('bob')];
        const roomId = await roomOf(owner, [bob]);
        await joinCall(a, owner, roomId);
        const call = (await joinCall(b, bob, roomId)).call;
        // The stand-in answers (503) only after the instance's request timeout has passed.
        standin.delayMs = 1000;
        standin.down = true;
        const t0 = Date.now();
        expectError(await gql(inst.url, EndCallDocument, { roomId }, { token: users.token(owner) }), 'UNAVAILABLE');
        // Within the timeout's reach, before the stand-in's late answer.
        expect(Date.now() - t0).toBeLessThan(900);
        standin.delayMs = 0;
        standin.down = false;
        expect(await redis.hget(callKeys.call(roomId), 'id')).toBe(call.id);
        const read = await roomCall(a, bob, roomId);
        expect(read).toMatchObject({ id: call.id, endedAt: null });
        expect(idsOf(read)).toEqual([bob, owner].sort());
      });
    }
  });
});

describe('when participants exchange media keys', () => {
  it('should refuse identity keys that are not 32 bytes of base64, and announce a replacement in shared rooms', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const token = users.token(alice);
    for (const bad of ['not base64!', Buffer.alloc(31).toString('base64'), Buffer.alloc(33).toString('base64'), '']) {
      expectError(await gql(a.url, RegisterIdentityKeyDocument, { publicKey: bad }, { token }), 'BAD_USER_INPUT', 'publicKey');
    }
    const roomId = await roomOf(alice, [bob]);
    const first = await identityOf(alice);
    const watcher = await events(b, bob, roomId);
    const second = await identityOf(alice, b);
    const { user } = await gqlOk(a.url, UserIdentityKeyDocument, { id: alice }, users.token(bob));
    expect(user?.identityKey).toBe(second.publicKey);
    expect(second.publicKey).not.toBe(first.publicKey);
    const changed = await waitFor(
      () => watcher.results.map((r) => r.data?.roomEvents).find((e) => e?.__typename === 'IdentityKeyChanged'),
      5000,
      'IdentityKeyChanged',
    );
    expect(changed).toEqual({ __typename: 'IdentityKeyChanged', roomId, user: { id: alice }, publicKey: second.publicKey });
  });

  it('should refuse a key signed by another identity, for another epoch, or tampered, and anyone not in the call', async () => {
    const [alice, bob, mallory] = [await users.newUser('alice'), await users.newUser('bob'), await users.newUser('mallory')];
    const roomId = await roomOf(alice, [bob]);
    const call = (await joinCall(a, alice, roomId)).call;
    const identity = await identityOf(alice);
    const other = generateKeyPairSync('ed25519').privateKey;
    const publish = (input: { keyId: string; publicKey: string; signature: string }, userId = alice) =>
      gql(a.url, PublishCallKeyDocument, { roomId, input }, { token: users.token(userId) });

    expectError(await publish(mediaKey(other, roomId, call.id, 0).input), 'BAD_USER_INPUT', 'signature');
    expectError(await publish(mediaKey(identity.privateKey, roomId, call.id, 1).input), 'BAD_USER_INPUT', 'signature');
    const good = mediaKey(identity.privateKey, roomId, call.id, 0).input;
    const tampered = { ...good, publicKey: rawPublicKey(generateKeyPairSync('x25519').publicKey) };
    expectError(await publish(tampered), 'BAD_USER_INPUT', 'signature');
    expectError(await publish({ ...good, keyId: 'a|b' }), 'BAD_USER_INPUT', 'keyId');
    expectError(await publish({ ...good, publicKey: Buffer.alloc(16).toString('base64') }), 'BAD_USER_INPUT', 'publicKey');
    // bob is a member but not in the call; mallory is not even a member.
    const bobIdentity = await identityOf(bob);
    expectError(await publish(mediaKey(bobIdentity.privateKey, roomId, call.id, 0).input, bob), 'FORBIDDEN');
    expectError(await publish(good, mallory), 'FORBIDDEN');
    expectError(await gql(a.url, CallKeysDocument, { roomId }, { token: users.token(bob) }), 'FORBIDDEN');
    expectError(await gql(a.url, CallKeysDocument, { roomId }, { token: users.token(mallory) }), 'FORBIDDEN');
    expect((await gqlOk(a.url, CallKeysDocument, { roomId }, users.token(alice))).callKeys).toEqual([]);
    expect((await publish(good)).data?.publishCallKey).toMatchObject({ epoch: 0, callId: call.id, publicKey: good.publicKey });
  });

  it('should let two clients derive the same shared secret from each other’s published keys', async () => {
    const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
    const roomId = await roomOf(alice, [bob]);
    const bobEvents = await events(b, bob, roomId);
    const call = (await joinCall(a, alice, roomId)).call;
    await joinCall(b, bob, roomId);
    const clients = await Promise.all(
      [
        { userId: alice, inst: a },
        { userId: bob, inst: b },
      ].map(async ({ userId, inst }) => {
        const identity = await identityOf(userId, inst);
        const media = mediaKey(identity.privateKey, roomId, call.id, call.epoch, `${userId}-k`);
        await gqlOk(inst.url, PublishCallKeyDocument, { roomId, input: media.input }, users.token(userId));
        return { userId, inst, media };
      }),
    );
    await waitFor(
      () => bobEvents.results.filter((r) => r.data?.roomEvents.__typename === 'CallKeyPublished').length === 2,
      5000,
      'two CallKeyPublished',
    );
    const secrets = await Promise.all(
      clients.map(async (me) => {
        const { callKeys: served } = await gqlOk(me.inst.url, CallKeysDocument, { roomId }, users.token(me.userId));
        expect(served.map((k) => k.user.id)).toEqual([alice, bob].sort());
        const peer = served.find((k) => k.user.id !== me.userId);
        if (!peer?.user.identityKey) throw new Error('no peer key');
        // What a client does: check the signature against the peer's identity key, then agree.
        const text = callKeySignedText(roomId, peer.callId, peer.epoch, peer.keyId, peer.publicKey);
        expect(verify(null, Buffer.from(text), okpKey(peer.user.identityKey, 'Ed25519'), Buffer.from(peer.signature, 'base64'))).toBe(true);
        return diffieHellman({ privateKey: me.media.pair.privateKey, publicKey: okpKey(peer.publicKey, 'X25519') });
      }),
    );
    expect(secrets[0]?.length).toBe(32);
    expect(secrets[0]?.equals(secrets[1] as Buffer)).toBe(true);
  });

  it('should rotate once for leaves within the window, and serve only keys of the new epoch', async () => {
    const ids = [await users.newUser('alice'), await users.newUser('bob'), await users.newUser('carol'), await users.newUser('dave')];
    const [alice, bob, carol, dave] = ids as [string, string, string, string];
    const roomId = await roomOf(alice, [bob, carol, dave]);
    const watcher = await events(a, alice, roomId);
    let call: CallFieldsFragment | undefined;
    for (const id of ids) call = (await joinCall(a, id, roomId)).call;
    const callId = (call as CallFieldsFragment).id;
    const identity = await identityOf(alice);
    await gqlOk(a.url, PublishCallKeyDocument, { roomId, input: mediaKey(identity.privateKey, roomId, callId, 0).input }, users.token(alice));
    await Promise.all([
      gqlOk(a.url, LeaveCallDocument, { roomId }, users.token(carol)),
      gqlOk(b.url, LeaveCallDocument, { roomId }, users.token(dave)),
    ]);
    const rekey = await callUpdate(watcher, (e) => e.rekey, 'the rekey');
    expect(rekey.call.epoch).toBe(1);
    expect(idsOf(rekey.call)).toEqual([alice, bob].sort());
    // One rotation: none other is due, and the epoch stays 1.
    expect(await redis.hget(callKeys.call(roomId), 'rekeyAt')).toBeNull();
    expect(await redis.hget(callKeys.call(roomId), 'epoch')).toBe('1');
    expect(callUpdates(watcher).filter((e) => e.rekey)).toHaveLength(1);
    expect((await gqlOk(a.url, CallKeysDocument, { roomId }, users.token(bob))).callKeys).toEqual([]);
    const stale = mediaKey(identity.privateKey, roomId, callId, 0).input;
    expectError(await gql(a.url, PublishCallKeyDocument, { roomId, input: stale }, { token: users.token(alice) }), 'BAD_USER_INPUT', 'signature');
    const fresh = mediaKey(identity.privateKey, roomId, callId, 1, 'k2').input;
    await gqlOk(b.url, PublishCallKeyDocument, { roomId, input: fresh }, users.token(alice));
    const served = (await gqlOk(a.url, CallKeysDocument, { roomId }, users.token(bob))).callKeys;
    expect(served.map((k) => [k.user.id, k.epoch, k.keyId])).toEqual([[alice, 1, 'k2']]);
  });

  it('should drop every key of the call when LiveKit reports room_finished', async () => {
    const alice = await users.newUser('alice');
    const roomId = await roomOf(alice, []);
    const { roomSid } = await standin.connect(roomId, alice);
    const call = await waitFor(() => roomCall(a, alice, roomId), 5000, 'the call');
    const identity = await identityOf(alice);
    await gqlOk(a.url, PublishCallKeyDocument, { roomId, input: mediaKey(identity.privateKey, roomId, call.id, 0).input }, users.token(alice));
    expect(await redis.exists(callKeys.mediaKeys(roomId))).toBe(1);
    await standin.send(standin.event('room_finished', roomId, { roomSid }));
    expect(await redis.exists(callKeys.mediaKeys(roomId))).toBe(0);
    expectError(await gql(a.url, CallKeysDocument, { roomId }, { token: users.token(alice) }), 'FORBIDDEN');
  });

  it('should stop serving a key after CALL_KEY_TTL_SECONDS', async () => {
    await withInstance({ CALL_KEY_TTL_SECONDS: '0.5' }, async (short) => {
      const alice = await users.newUser('alice');
      const roomId = await roomOf(alice, [], short);
      const call = (await joinCall(short, alice, roomId)).call;
      const identity = await identityOf(alice, short);
      const input = mediaKey(identity.privateKey, roomId, call.id, 0).input;
      const published = (await gqlOk(short.url, PublishCallKeyDocument, { roomId, input }, users.token(alice))).publishCallKey;
      expect(Date.parse(published.expiresAt) - Date.now()).toBeLessThanOrEqual(500);
      const served = async () => (await gqlOk(short.url, CallKeysDocument, { roomId }, users.token(alice))).callKeys.length;
      expect(await served()).toBe(1);
      await waitFor(async () => (await served()) === 0, 3000, 'the key to expire');
      await waitFor(async () => (await redis.exists(callKeys.mediaKeys(roomId))) === 0, 3000, 'Redis to drop the expired keys');
    });
  });
});

describe('when an instance shuts down', () => {
  it('should stop its calls timers: no LiveKit request, calls command or settle after stop()', async () => {
    const ownPrefix = uniquePrefix('calls-stop');
    prefixes.push(ownPrefix);
    const logs = captureLogger();
    // Short intervals: the sync every 100 ms, the due-timer sweep every 50 ms (PRESENCE_TICK_MS).
    const env = { ...standin.env, ...CALL_ENV, PRESENCE_TICK_MS: '50', CALL_SYNC_INTERVAL_MS: '100', REDIS_KEY_PREFIX: ownPrefix };
    const app = await buildApp(loadConfig(testEnv(env)), { logger: logs.logger });
    const url = `http://127.0.0.1:${(await app.start()).port}/graphql`;
    const commands: string[][] = [];
    const monitor = await monitorRedis(sharedRedisUrl(), (args) => {
      if (args.some((arg) => arg.startsWith(ownPrefix))) commands.push(args);
    });
    try {
      const [alice, bob] = [await users.newUser('alice'), await users.newUser('bob')];
      const roomId = await createRoomAs(url, users.token(alice), [bob], { label: 'calls-stop' });
      await gqlOk(url, JoinCallDocument, { roomId }, users.token(alice));
      await gqlOk(url, JoinCallDocument, { roomId }, users.token(bob));
      // LiveKit has them; its webhooks would go to another deployment's instance, so none are sent.
      await standin.connect(roomId, alice, { webhooks: false });
      await standin.connect(roomId, bob, { webhooks: false });
      // Both timers run before the stop: periodic ListParticipants, and sweeps of calls:timers.
      const sweeps = () => commands.filter((c) => c[0]?.toLowerCase() === 'zrangebyscore' && c[1] === `${ownPrefix}calls:timers`);
      await waitFor(() => twirpCalls('ListParticipants', roomId).length >= 2, 5000, 'two periodic syncs');
      await waitFor(() => sweeps().length >= 2, 5000, 'two due-timer sweeps');
      // bob leaves: a rotation is due in REKEY_MS, so a settle timer is pending when the instance stops.
      await gqlOk(url, LeaveCallDocument, { roomId }, users.token(bob));
      await app.stop();
      const [requests, logged] = [twirpCalls('ListParticipants', roomId).length + twirpCalls('RemoveParticipant', roomId).length, logs.lines.length];
      commands.length = 0;
      // The one bare wait of this file: it must show that nothing happens for a while. 1 s is 10
      // sync intervals, 20 sweep ticks, and over 3 times the rekey window of the pending settle.
      await new Promise((r) => setTimeout(r, 1000));
      expect(twirpCalls('ListParticipants', roomId).length + twirpCalls('RemoveParticipant', roomId).length).toBe(requests);
      expect(commands).toEqual([]);
      // stop() closes the Redis connection, so a timer left running would reach neither Redis nor
      // LiveKit: it would fail, and log that it failed, every tick. None may have run.
      expect(logs.lines.slice(logged).filter((l) => l.msg?.startsWith('call '))).toEqual([]);
    } finally {
      monitor.stop();
      await app.stop();
    }
  });
});

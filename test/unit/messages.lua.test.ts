import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeferredCommands, SENT } from '../../src/infra/deferred-commands.js';
import type { ScriptRegistry, ScriptRunner } from '../../src/infra/scripts.js';
import { encodeMessageId } from '../../src/messages/message-id.js';
import { messageKeys } from '../../src/messages/messages.keys.js';
import type { MessageModel } from '../../src/messages/messages.models.js';
import { roomKeys } from '../../src/rooms/rooms.keys.js';
import { deletePrefixed, luaConnection } from '../helpers/lua.js';
import { uniquePrefix } from '../helpers/server.js';

/**
 * The messages domain's Lua scripts, called directly: every status code, the JSON they store
 * (cjson round trips), the clientId dedupe and its TTL, and races between concurrent calls.
 */

const DEDUPE_TTL_SECONDS = 24 * 60 * 60;
const NOW = 1_767_225_600_123; // 13 digits: must survive cjson's number formatting exactly
const prefix = uniquePrefix('messages-lua');
let redis: Redis;
let sendMessage: ScriptRunner;
let editMessage: ScriptRunner;
let deleteMessage: ScriptRunner;
let readMessages: ScriptRunner;

beforeAll(async () => {
  let scripts: ScriptRegistry;
  ({ redis, scripts } = await luaConnection(prefix));
  sendMessage = scripts.get('sendMessage');
  editMessage = scripts.get('editMessage');
  deleteMessage = scripts.get('deleteMessage');
  readMessages = scripts.get('readMessages');
});

afterAll(async () => {
  await deletePrefixed(prefix);
  redis?.disconnect();
});

type SendReply = [number, string, number, ...unknown[]];
type EditReply = [number, string];
type DeleteReply = [number, string, number];

/** A message as the scripts store it (deletedAt is set by deleteMessage). */
type StoredMessage = MessageModel & { deletedAt?: number };

const newRoomId = () => randomBytes(6).toString('hex');
/** The history epoch every seeded room gets. */
const EPOCH = 'E1';
const roomScriptKeys = (roomId: string) => [
  roomKeys.room(roomId),
  roomKeys.members(roomId),
  messageKeys.messages(roomId),
];

async function seedRoom(owner: string, members: string[] = []) {
  const roomId = newRoomId();
  await redis
    .multi()
    .hset(roomKeys.room(roomId), {
      id: roomId,
      name: 'r',
      visibility: 'PRIVATE',
      ownerId: owner,
      createdAt: 1,
      lastActivityAt: 1,
      seq: 0,
      firstSeq: 1,
      epoch: EPOCH,
    })
    .zadd(roomKeys.members(roomId), ...[owner, ...members].flatMap((m) => [0, m]))
    .exec();
  return roomId;
}

/** Calls sendMessage as the messages service does. */
function send(roomId: string, senderId: string, text: string, clientId = '', now = NOW, retention = 0) {
  return sendMessage(
    [...roomScriptKeys(roomId), messageKeys.dedupe(roomId, senderId, clientId)],
    [roomId, senderId, text, clientId, now, DEDUPE_TTL_SECONDS, retention],
  ) as Promise<SendReply>;
}

async function sendOk(roomId: string, senderId: string, text: string, clientId = '') {
  const [status, json, created] = await send(roomId, senderId, text, clientId);
  expect(status).toBe(0);
  expect(created).toBe(1);
  return JSON.parse(json) as StoredMessage;
}

const edit = (roomId: string, userId: string, seq: number, text: string, now = NOW + 1000, epoch = EPOCH) =>
  editMessage(roomScriptKeys(roomId), [userId, seq, text, now, epoch]) as Promise<EditReply>;

const del = (roomId: string, userId: string, seq: number, now = NOW + 2000, epoch = EPOCH) =>
  deleteMessage(roomScriptKeys(roomId), [userId, seq, now, epoch]) as Promise<DeleteReply>;

const stored = async (roomId: string, seq: number) => {
  const raw = await redis.hget(messageKeys.messages(roomId), String(seq));
  return raw === null ? null : (JSON.parse(raw) as StoredMessage);
};

describe('sendMessage', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND) and store nothing', async () => {
      const roomId = newRoomId();
      expect(await send(roomId, 'alice', 'hi', 'c1')).toEqual([1, '', 0]);
      expect(await redis.exists(messageKeys.messages(roomId), messageKeys.dedupe(roomId, 'alice', 'c1'))).toBe(0);
    });
  });

  describe('when the sender is not a member', () => {
    it('should answer status 2 (NOT_MEMBER) and allocate no seq', async () => {
      const roomId = await seedRoom('owner');
      expect(await send(roomId, 'mallory', 'hi', 'c1')).toEqual([2, '', 0]);
      expect(await redis.hget(roomKeys.room(roomId), 'seq')).toBe('0');
      expect(await redis.exists(messageKeys.dedupe(roomId, 'mallory', 'c1'))).toBe(0);
    });
  });

  describe('when a member sends', () => {
    it('should store the message as JSON under seq 1 and return it with created 1, its seq and epoch', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      const reply = await send(roomId, 'bob', 'hello', 'c-1');
      const [status, json, created] = reply;
      expect([status, created]).toEqual([0, 1]);
      expect(reply.slice(3)).toEqual([1, EPOCH]);
      expect(JSON.parse(json)).toEqual({
        roomId,
        epoch: EPOCH,
        seq: 1,
        senderId: 'bob',
        text: 'hello',
        clientId: 'c-1',
        createdAt: NOW,
        editedAt: null,
        deleted: false,
      });
      expect(await redis.hget(messageKeys.messages(roomId), '1')).toBe(json);
    });

    it('should move the room seq and lastActivityAt', async () => {
      const roomId = await seedRoom('owner');
      await send(roomId, 'owner', 'one', '', NOW);
      await send(roomId, 'owner', 'two', '', NOW + 5);
      expect(await redis.hmget(roomKeys.room(roomId), 'seq', 'lastActivityAt')).toEqual(['2', String(NOW + 5)]);
    });

    it('should store clientId null and write no dedupe key when there is no clientId', async () => {
      const roomId = await seedRoom('owner');
      const first = await sendOk(roomId, 'owner', 'same text');
      const second = await sendOk(roomId, 'owner', 'same text');
      expect(first.clientId).toBeNull();
      expect([first.seq, second.seq]).toEqual([1, 2]);
      expect(await redis.exists(messageKeys.dedupe(roomId, 'owner', ''))).toBe(0);
    });

    it('should keep numeric-looking text and clientIds as strings', async () => {
      const roomId = await seedRoom('owner');
      const m = await sendOk(roomId, 'owner', '12345', '007');
      expect(m.text).toBe('12345');
      expect(m.clientId).toBe('007');
    });
  });

  describe('when the text holds unicode, emoji, quotes, backslashes and newlines', () => {
    it('should round-trip it exactly through cjson', async () => {
      const roomId = await seedRoom('owner');
      const text =
        'héllo "quoted" \'single\' back\\slash /slash\nline two\r\n\ttab 🎉 👩‍👩‍👧 中文 ' +
        'العربية \u2028\u2029 zero\u200Bwidth </script> {"json":true} \u0001\u001f end';
      const m = await sendOk(roomId, 'owner', text);
      expect(m.text).toBe(text);
      expect((await stored(roomId, 1))?.text).toBe(text);
    });

    it('should round-trip a 4000-character text of mixed widths', async () => {
      const roomId = await seedRoom('owner');
      const alphabet = ['a', 'é', '🙂', '"', '\n', '中', '\\', '𝄞'];
      const text = Array.from({ length: 4000 }, (_, i) => alphabet[i % alphabet.length]).join('');
      expect([...text]).toHaveLength(4000);
      const m = await sendOk(roomId, 'owner', text);
      expect(m.text).toBe(text);
      expect((await stored(roomId, 1))?.text).toBe(text);
    });
  });

  describe('when the same clientId is sent again', () => {
    it('should return the original message with created 0 and allocate no seq', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      const [, firstJson] = await send(roomId, 'bob', 'first', 'dup');
      const again = await send(roomId, 'bob', 'a different text', 'dup', NOW + 99);
      expect(again).toEqual([0, firstJson, 0]);
      expect(await redis.hget(roomKeys.room(roomId), 'seq')).toBe('1');
      expect(await redis.hlen(messageKeys.messages(roomId))).toBe(1);
    });

    it('should return the original as it is now (after an edit)', async () => {
      const roomId = await seedRoom('owner');
      await send(roomId, 'owner', 'first', 'dup');
      const [, editedJson] = await edit(roomId, 'owner', 1, 'edited');
      const [, json, created] = await send(roomId, 'owner', 'first', 'dup');
      expect(created).toBe(0);
      expect(json).toBe(editedJson);
    });

    it('should keep the dedupe key for about 24 hours', async () => {
      const roomId = await seedRoom('owner');
      await send(roomId, 'owner', 'x', 'ttl');
      const ttl = await redis.ttl(messageKeys.dedupe(roomId, 'owner', 'ttl'));
      expect(ttl).toBeGreaterThan(DEDUPE_TTL_SECONDS - 60);
      expect(ttl).toBeLessThanOrEqual(DEDUPE_TTL_SECONDS);
      expect(await redis.get(messageKeys.dedupe(roomId, 'owner', 'ttl'))).toBe('1');
    });

    it('should not dedupe across senders or rooms', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      const otherRoom = await seedRoom('owner', ['bob']);
      const a = await sendOk(roomId, 'owner', 'x', 'shared');
      const b = await sendOk(roomId, 'bob', 'x', 'shared');
      const c = await sendOk(otherRoom, 'owner', 'x', 'shared');
      expect([a.seq, b.seq, c.seq]).toEqual([1, 2, 1]);
    });

    it('should send anew when the remembered message no longer exists (history reset)', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'x', 'gone');
      await redis.del(messageKeys.messages(roomId));
      const m = await sendOk(roomId, 'owner', 'y', 'gone');
      expect(m.seq).toBe(2);
      expect(await redis.get(messageKeys.dedupe(roomId, 'owner', 'gone'))).toBe('2');
    });
  });

  describe('when 50 messages are sent concurrently', () => {
    it('should allocate seqs 1..50, each exactly once, and store all of them', async () => {
      const roomId = await seedRoom('owner', ['bob', 'carol']);
      const senders = ['owner', 'bob', 'carol'];
      const replies = await Promise.all(
        Array.from({ length: 50 }, (_, i) => send(roomId, senders[i % 3] as string, `m${i}`, `c${i}`)),
      );
      expect(replies.every(([status, , created]) => status === 0 && created === 1)).toBe(true);
      const seqs = replies.map(([, json]) => (JSON.parse(json) as StoredMessage).seq).sort((a, b) => a - b);
      expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(await redis.hlen(messageKeys.messages(roomId))).toBe(50);
      expect(await redis.hget(roomKeys.room(roomId), 'seq')).toBe('50');
    });
  });

  describe('when 30 sends with one clientId race', () => {
    it('should create exactly one message and return the same JSON to every caller', async () => {
      const roomId = await seedRoom('owner');
      const replies = await Promise.all(
        Array.from({ length: 30 }, (_, i) => send(roomId, 'owner', `attempt ${i}`, 'retry-me')),
      );
      expect(replies.every(([status]) => status === 0)).toBe(true);
      expect(replies.filter(([, , created]) => created === 1)).toHaveLength(1);
      expect(new Set(replies.map(([, json]) => json)).size).toBe(1);
      expect(await redis.hlen(messageKeys.messages(roomId))).toBe(1);
      expect(await redis.hget(roomKeys.room(roomId), 'seq')).toBe('1');
    });
  });
});

describe('editMessage', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND)', async () => {
      expect(await edit(newRoomId(), 'alice', 1, 'x')).toEqual([1, '']);
    });
  });

  describe('when the editor is not a member', () => {
    it('should answer status 2 (NOT_MEMBER), even as the author who left', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      await sendOk(roomId, 'bob', 'mine');
      await redis.zrem(roomKeys.members(roomId), 'bob');
      expect(await edit(roomId, 'bob', 1, 'changed')).toEqual([2, '']);
      expect((await stored(roomId, 1))?.text).toBe('mine');
    });
  });

  describe('when the message does not exist', () => {
    it('should answer status 4 (MESSAGE_NOT_FOUND)', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'one');
      expect(await edit(roomId, 'owner', 2, 'x')).toEqual([4, '']);
    });
  });

  describe('when the editor is not the author', () => {
    it('should answer status 5 (NOT_AUTHOR), even to the room owner', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      await sendOk(roomId, 'bob', 'bob wrote this');
      expect(await edit(roomId, 'owner', 1, 'owner rewrote it')).toEqual([5, '']);
      expect((await stored(roomId, 1))?.text).toBe('bob wrote this');
    });
  });

  describe('when the author edits', () => {
    it('should replace the text, set editedAt and keep everything else', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      const original = await sendOk(roomId, 'bob', 'typo', 'c');
      const [status, json] = await edit(roomId, 'bob', 1, 'fixed 🎉 "now"\nok', NOW + 500);
      expect(status).toBe(0);
      const edited = JSON.parse(json) as StoredMessage;
      expect(edited).toEqual({ ...original, text: 'fixed 🎉 "now"\nok', editedAt: NOW + 500 });
      expect(await stored(roomId, 1)).toEqual(edited);
    });

    it('should change nothing when the text is the same (editedAt stays null)', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'same');
      const before = await redis.hget(messageKeys.messages(roomId), '1');
      expect(await edit(roomId, 'owner', 1, 'same')).toEqual([0, before]);
      expect((await stored(roomId, 1))?.editedAt).toBeNull();
    });
  });

  describe('when the message was deleted', () => {
    it('should answer status 7 (DELETED) and keep it deleted', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'soon gone');
      expect((await del(roomId, 'owner', 1))[0]).toBe(0);
      expect(await edit(roomId, 'owner', 1, 'resurrected')).toEqual([7, '']);
      expect(await stored(roomId, 1)).toMatchObject({ text: '', deleted: true });
    });
  });

  describe('when an edit and a delete race', () => {
    it('should always end deleted with empty text', async () => {
      const roomId = await seedRoom('owner');
      for (let i = 0; i < 20; i++) await sendOk(roomId, 'owner', `m${i}`);
      const outcomes = await Promise.all(
        Array.from({ length: 20 }, async (_, i) => {
          const [e, d] = await Promise.all([edit(roomId, 'owner', i + 1, `edited ${i}`), del(roomId, 'owner', i + 1)]);
          return { editStatus: e[0], deleteStatus: d[0], changed: d[2] };
        }),
      );
      for (const o of outcomes) {
        expect([0, 7]).toContain(o.editStatus);
        expect(o).toMatchObject({ deleteStatus: 0, changed: 1 });
      }
      for (let seq = 1; seq <= 20; seq++) {
        expect(await stored(roomId, seq)).toMatchObject({ seq, text: '', deleted: true });
      }
    });
  });
});

describe('deleteMessage', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1 (ROOM_NOT_FOUND)', async () => {
      expect(await del(newRoomId(), 'alice', 1)).toEqual([1, '', 0]);
    });
  });

  describe('when the user is not a member', () => {
    it('should answer status 2 (NOT_MEMBER)', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'x');
      expect(await del(roomId, 'mallory', 1)).toEqual([2, '', 0]);
    });
  });

  describe('when the message does not exist', () => {
    it('should answer status 4 (MESSAGE_NOT_FOUND)', async () => {
      const roomId = await seedRoom('owner');
      expect(await del(roomId, 'owner', 1)).toEqual([4, '', 0]);
    });
  });

  describe('when the user is neither the author nor the owner', () => {
    it('should answer status 5 (NOT_AUTHOR) and keep the message', async () => {
      const roomId = await seedRoom('owner', ['bob', 'carol']);
      await sendOk(roomId, 'bob', 'bob says');
      expect(await del(roomId, 'carol', 1)).toEqual([5, '', 0]);
      expect(await stored(roomId, 1)).toMatchObject({ text: 'bob says', deleted: false });
    });
  });

  describe('when the author deletes', () => {
    it('should empty the text, mark it deleted, keep id and seq, and report changed 1', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      await sendOk(roomId, 'bob', 'one');
      const original = await sendOk(roomId, 'bob', 'two', 'c2');
      const [status, json, changed] = await del(roomId, 'bob', 2, NOW + 777);
      expect([status, changed]).toEqual([0, 1]);
      const deleted = JSON.parse(json) as StoredMessage;
      expect(deleted).toEqual({ ...original, text: '', deleted: true, deletedAt: NOW + 777 });
      expect(await stored(roomId, 2)).toEqual(deleted);
      expect(await redis.hget(roomKeys.room(roomId), 'seq')).toBe('2');
    });
  });

  describe('when the room owner deletes a member’s message', () => {
    it('should delete it', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      await sendOk(roomId, 'bob', 'rude');
      const [status, , changed] = await del(roomId, 'owner', 1);
      expect([status, changed]).toEqual([0, 1]);
      expect(await stored(roomId, 1)).toMatchObject({ senderId: 'bob', text: '', deleted: true });
    });
  });

  describe('when a message is deleted twice', () => {
    it('should report changed 1 the first time and 0 the second, returning the same JSON', async () => {
      const roomId = await seedRoom('owner');
      await sendOk(roomId, 'owner', 'x');
      const first = await del(roomId, 'owner', 1, NOW + 1);
      const second = await del(roomId, 'owner', 1, NOW + 2);
      expect(first[2]).toBe(1);
      expect(second).toEqual([0, first[1], 0]);
    });

    it('should report changed 1 exactly once when the deletes race', async () => {
      const roomId = await seedRoom('owner', ['bob']);
      await sendOk(roomId, 'bob', 'x');
      const replies = await Promise.all(
        Array.from({ length: 20 }, (_, i) => del(roomId, i % 2 === 0 ? 'bob' : 'owner', 1, NOW + i)),
      );
      expect(replies.every(([status]) => status === 0)).toBe(true);
      expect(replies.filter(([, , changed]) => changed === 1)).toHaveLength(1);
      expect(new Set(replies.map(([, json]) => json)).size).toBe(1);
    });
  });
});

type ReadReply = [number, string?, number?, number?, ...string[]];
const read = (roomId: string, from: number, to: number) =>
  readMessages([roomKeys.room(roomId), messageKeys.messages(roomId)], [from, to]) as Promise<ReadReply>;

describe('retention (sendMessage ARGV[7])', () => {
  describe('when more messages are sent than the room keeps', () => {
    it('should keep exactly the last N, move firstSeq, and keep seqs counting', async () => {
      const roomId = await seedRoom('owner');
      for (let i = 1; i <= 8; i++) await send(roomId, 'owner', `m${i}`, '', NOW, 5);
      expect((await redis.hkeys(messageKeys.messages(roomId))).map(Number).sort((a, b) => a - b)).toEqual([4, 5, 6, 7, 8]);
      expect(await redis.hmget(roomKeys.room(roomId), 'seq', 'firstSeq')).toEqual(['8', '4']);
    });

    it('should trim exactly once per message under concurrent sends', async () => {
      const roomId = await seedRoom('owner');
      await Promise.all(Array.from({ length: 40 }, (_, i) => send(roomId, 'owner', `m${i}`, '', NOW, 10)));
      const kept = (await redis.hkeys(messageKeys.messages(roomId))).map(Number).sort((a, b) => a - b);
      expect(kept).toEqual([31, 32, 33, 34, 35, 36, 37, 38, 39, 40]);
      expect(await redis.hget(roomKeys.room(roomId), 'firstSeq')).toBe('31');
    });
  });

  describe('when retention is 0', () => {
    it('should keep everything', async () => {
      const roomId = await seedRoom('owner');
      for (let i = 1; i <= 6; i++) await send(roomId, 'owner', `m${i}`);
      expect(await redis.hlen(messageKeys.messages(roomId))).toBe(6);
      expect(await redis.hget(roomKeys.room(roomId), 'firstSeq')).toBe('1');
    });
  });
});

describe('history epoch (editMessage ARGV[5], deleteMessage ARGV[4])', () => {
  it('should answer MESSAGE_NOT_FOUND to an edit or delete carrying another epoch, changing nothing', async () => {
    const roomId = await seedRoom('owner');
    await sendOk(roomId, 'owner', 'keep me');
    expect((await edit(roomId, 'owner', 1, 'changed', NOW, 'OLD'))[0]).toBe(4);
    expect((await del(roomId, 'owner', 1, NOW, 'OLD'))[0]).toBe(4);
    expect(await stored(roomId, 1)).toMatchObject({ text: 'keep me', deleted: false, epoch: EPOCH });
  });
});

describe('readMessages', () => {
  describe('when the room does not exist', () => {
    it('should answer status 1', async () => {
      expect(await read(newRoomId(), 1, 10)).toEqual([1]);
    });
  });

  describe('when the room has messages', () => {
    it('should return the position and the run, capped at the latest seq', async () => {
      const roomId = await seedRoom('owner');
      for (let i = 1; i <= 4; i++) await send(roomId, 'owner', `m${i}`);
      const [status, epoch, firstSeq, lastSeq, ...jsons] = await read(roomId, 2, 100);
      expect([status, epoch, firstSeq, lastSeq]).toEqual([0, EPOCH, 1, 4]);
      expect(jsons.map((j) => (JSON.parse(j) as StoredMessage).seq)).toEqual([2, 3, 4]);
    });

    it('should return no message when asked from a trimmed seq', async () => {
      const roomId = await seedRoom('owner');
      for (let i = 1; i <= 6; i++) await send(roomId, 'owner', `m${i}`, '', NOW, 3);
      expect(await read(roomId, 2, 10)).toEqual([0, EPOCH, 4, 6]);
      expect((await read(roomId, 4, 10)).slice(4)).toHaveLength(3);
    });

    it('should return the position with no message when nothing follows', async () => {
      const roomId = await seedRoom('owner');
      await send(roomId, 'owner', 'only');
      expect(await read(roomId, 2, 50)).toEqual([0, EPOCH, 1, 1]);
    });
  });
});

describe('sendWithHooks (a send and its deferred commands, one round trip)', () => {
  let scripts: ScriptRegistry;
  beforeAll(async () => {
    ({ scripts } = await luaConnection(prefix));
  });

  /** Runs sendWithHooks as the messages service does, with `queue` deferring commands. */
  async function sendWith(roomId: string, senderId: string, text: string, queue: (d: DeferredCommands) => void, clientId = '', retention = 0) {
    const deferred = new DeferredCommands(scripts.included('sendWithHooks'));
    queue(deferred);
    const sendArgs = [roomId, senderId, text, clientId, NOW, DEDUPE_TTL_SECONDS, retention];
    return (await scripts.get('sendWithHooks')(
      [...roomScriptKeys(roomId), messageKeys.dedupe(roomId, senderId, clientId), ...deferred.keys],
      [sendArgs.length, ...sendArgs, ...deferred.args],
    )) as [SendReply, ...unknown[]];
  }

  it('should fill in every placeholder with what the send assigned', async () => {
    // Room ids of three lengths: the id's base64url ends in each of its three ways.
    for (const roomId of [newRoomId(), `${newRoomId()}a`, `${newRoomId()}ab`]) {
      await seedRoom('alice');
      await redis.hset(roomKeys.room(roomId), { id: roomId, seq: 0, firstSeq: 1, epoch: EPOCH });
      await redis.zadd(roomKeys.members(roomId), 0, 'alice');
      await redis.hset(roomKeys.room(roomId), 'seq', 41);
      const out = `out:${roomId}`;
      const [sent, ...replies] = await sendWith(roomId, 'alice', 'héllo', (d) =>
        d.xadd(out, '*', 'seq', SENT.seq, 'epoch', SENT.epoch, 'id', SENT.id, 'm', SENT.seqMember, 't', SENT.trimmedMember(40), 'n', SENT.trimmedMember(0), 'e', SENT.event('Ålice "A"')),
      );
      expect(sent[0]).toBe(0);
      expect(replies).toHaveLength(1);
      const entries = (await redis.xrange(out, '-', '+')) as [string, string[]][];
      const fields = entries[0]?.[1] ?? [];
      const got = Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [fields[2 * i], fields[2 * i + 1]]));
      expect(got).toMatchObject({ seq: '42', epoch: EPOCH, id: encodeMessageId(roomId, 42, EPOCH), m: '000000000042', t: '000000000002', n: '' });
      expect(JSON.parse(got.e as string)).toEqual({ type: 'MessageAdded', message: JSON.parse(sent[1]), senderName: 'Ålice "A"' });
    }
  });

  it('should run the included scripts and commands in order, and isolate a failing one', async () => {
    const roomId = await seedRoom('alice', ['bob']);
    await redis.set(`str:${roomId}`, 'x');
    const [sent, typing, badCommand, counter, indexed, own, pub] = await sendWith(roomId, 'alice', 'hi', (d) => {
      scripts.queue(d, 'setTyping', [`typing:${roomId}`, `typingRooms:${roomId}`], [roomId, 'alice', 0, NOW, 5000]);
      d.hincrby(`str:${roomId}`, 'f', 1);
      d.hincrby(`counter:${roomId}`, 'n', 1);
      scripts.queue(d, 'indexMessage', [`dict:${roomId}`, `t:${roomId}:`, `all:${roomId}`, `docs:${roomId}`], [SENT.seqMember, NOW, '', 'hi']);
      d.hset(`own:${roomId}`, 'alice', SENT.seq).zadd(`pub:${roomId}`, SENT.seq, 'alice');
    });
    expect(sent).toEqual([0, expect.any(String), 1, 1, EPOCH]);
    expect(typing).toBeDefined();
    expect(badCommand).toBeInstanceOf(Error);
    expect(String(badCommand)).toMatch(/WRONGTYPE/);
    expect(counter).toBe(1);
    // indexMessage, HSET and ZADD ran with the seq the send assigned (1).
    expect([indexed, own, pub]).toEqual([1, 1, 1]);
    expect(await redis.hget(`docs:${roomId}`, '000000000001')).toBe('hi');
    expect(await redis.hget(`own:${roomId}`, 'alice')).toBe('1');
    expect(await redis.zscore(`pub:${roomId}`, 'alice')).toBe('1');
  });

  it('should run nothing deferred when no message is created (not a member, or a clientId seen before)', async () => {
    const roomId = await seedRoom('alice');
    const queue = (d: DeferredCommands) => void d.hincrby(`counter:${roomId}`, 'n', 1);
    expect(await sendWith(roomId, 'mallory', 'hi', queue)).toEqual([[2, '', 0]]);
    const [first] = await sendWith(roomId, 'alice', 'once', queue, 'c1');
    expect(first[2]).toBe(1);
    const again = await sendWith(roomId, 'alice', 'once', queue, 'c1');
    expect(again).toEqual([[0, first[1], 0]]);
    expect(await redis.hget(`counter:${roomId}`, 'n')).toBe('1');
  });

  it('should refuse to defer a script it does not include', () => {
    const d = new DeferredCommands(scripts.included('sendWithHooks'));
    expect(() => scripts.queue(d, 'vote', ['a', 'b', 'c', 'd', 'e'], [])).toThrow(/vote cannot be deferred/);
  });
});

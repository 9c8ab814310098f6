import type { Client as WsClient } from 'graphql-ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { decodeMessageId, encodeMessageId } from '../../src/messages/message-id.js';
import { expectError, gql, gqlOk, range, subscribe, waitFor, wsClient, type Subscription } from '../helpers/clients.js';
import { startCluster, type TestInstance, tokenFor, uid } from '../helpers/server.js';

/**
 * Read receipts across two instances: unread counts (others' messages, own messages, deletions,
 * two devices), forward-only watermarks, private receipts, readCount/readBy, leaving, errors, and
 * the coalescing of ReadReceipt events.
 */

const CREATE_ROOM = /* GraphQL */ `
  mutation ($input: CreateRoomInput!) {
    createRoom(input: $input) {
      id
    }
  }
`;
const SEND = /* GraphQL */ `
  mutation ($input: SendMessageInput!) {
    sendMessage(input: $input) {
      id
      seq
    }
  }
`;
const DELETE = /* GraphQL */ `
  mutation ($messageId: ID!) {
    deleteMessage(messageId: $messageId) {
      id
      deleted
    }
  }
`;
const LEAVE = /* GraphQL */ `
  mutation ($roomId: ID!) {
    leaveRoom(roomId: $roomId)
  }
`;
const MARK_READ = /* GraphQL */ `
  mutation ($roomId: ID!, $messageId: ID!, $private: Boolean) {
    markRead(roomId: $roomId, messageId: $messageId, private: $private) {
      id
      unreadCount
      lastReadMessageId
    }
  }
`;
const ROOM_STATE = /* GraphQL */ `
  query ($id: ID!) {
    room(id: $id) {
      id
      viewerIsMember
      unreadCount
      lastReadMessageId
    }
  }
`;
const READS = /* GraphQL */ `
  query ($roomId: ID!, $readers: Int) {
    messages(roomId: $roomId, first: 50) {
      edges {
        node {
          id
          seq
          sender {
            id
          }
          readCount
          readBy(first: $readers) {
            id
          }
        }
      }
    }
  }
`;
const ROOM_EVENTS = /* GraphQL */ `
  subscription ($roomId: ID!) {
    roomEvents(roomId: $roomId) {
      __typename
      ... on ReadReceipt {
        roomId
        user {
          id
        }
        messageId
      }
      ... on MessageAdded {
        message {
          id
          seq
        }
      }
    }
  }
`;

interface RoomState {
  id: string;
  viewerIsMember?: boolean;
  unreadCount: number;
  lastReadMessageId: string | null;
}
interface SentMessage {
  id: string;
  seq: number;
}
interface ReadsNode {
  id: string;
  seq: number;
  sender: { id: string };
  readCount: number;
  readBy: { id: string }[];
}
interface RoomEvent {
  __typename: string;
  roomId?: string;
  user?: { id: string };
  messageId?: string;
  message?: { id: string; seq: number };
}
type RoomEventsResult = { roomEvents: RoomEvent };

describe('when read receipts are used across two instances', () => {
  let a: TestInstance;
  let b: TestInstance;
  const clients: WsClient[] = [];

  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.dispose()));
    // Each test starts with no stream open, so waiting for streams means this test's streams.
    await waitFor(
      () => a.app.services.events.openCount() === 0 && b.app.services.events.openCount() === 0,
      5000,
      'streams of the previous test to close',
    );
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  /** A user with a token. */
  async function user(label: string) {
    const id = uid(label);
    return { id, token: await tokenFor(id, { name: label }) };
  }
  type User = Awaited<ReturnType<typeof user>>;

  const createRoom = async (owner: User, members: User[], visibility: 'PUBLIC' | 'PRIVATE' = 'PRIVATE') =>
    (
      await gqlOk<{ createRoom: { id: string } }>(
        a.url,
        CREATE_ROOM,
        { input: { name: uid('receipts'), visibility, memberIds: members.map((m) => m.id) } },
        owner.token,
      )
    ).createRoom.id;
  const send = async (inst: TestInstance, u: User, roomId: string, text = 'hello') =>
    (await gqlOk<{ sendMessage: SentMessage }>(inst.url, SEND, { input: { roomId, text } }, u.token)).sendMessage;
  const sendMany = async (inst: TestInstance, u: User, roomId: string, n: number) => {
    const out: SentMessage[] = [];
    for (const i of range(1, n)) out.push(await send(inst, u, roomId, `m${i}`));
    return out;
  };
  const del = (inst: TestInstance, u: User, messageId: string) => gqlOk(inst.url, DELETE, { messageId }, u.token);
  const markRead = async (inst: TestInstance, u: User, roomId: string, messageId: string, priv?: boolean) =>
    (
      await gqlOk<{ markRead: RoomState }>(
        inst.url,
        MARK_READ,
        { roomId, messageId, ...(priv === undefined ? {} : { private: priv }) },
        u.token,
      )
    ).markRead;
  const roomState = async (inst: TestInstance, u: User, roomId: string) =>
    (await gqlOk<{ room: RoomState }>(inst.url, ROOM_STATE, { id: roomId }, u.token)).room;
  const reads = async (inst: TestInstance, u: User, roomId: string, readers?: number) => {
    const data = await gqlOk<{ messages: { edges: { node: ReadsNode }[] } }>(
      inst.url,
      READS,
      { roomId, ...(readers === undefined ? {} : { readers }) },
      u.token,
    );
    return new Map(data.messages.edges.map((e) => [e.node.seq, e.node]));
  };
  const readersOf = (node: ReadsNode | undefined) => (node?.readBy ?? []).map((r) => r.id).sort();

  /** A roomEvents subscription of `u` on `inst`, live server-side when this resolves. */
  async function events(inst: TestInstance, u: User, roomId: string): Promise<Subscription<RoomEventsResult>> {
    const client = wsClient(inst.wsUrl, u.token);
    clients.push(client);
    const before = inst.app.services.events.openCount();
    const sub = subscribe<RoomEventsResult>(client, ROOM_EVENTS, { roomId });
    await waitFor(() => inst.app.services.events.openCount() > before, 5000, `${u.id}'s roomEvents stream to open`);
    return sub;
  }
  const eventsOf = (sub: Subscription<RoomEventsResult>) => {
    const failed = sub.results.find((r) => r.errors?.length);
    if (failed) throw new Error(`subscription error: ${JSON.stringify(failed.errors)}`);
    return sub.results.map((r) => r.data?.roomEvents).filter((e): e is RoomEvent => e !== undefined);
  };
  const receiptsOf = (sub: Subscription<RoomEventsResult>, userId: string) =>
    eventsOf(sub).filter((e) => e.__typename === 'ReadReceipt' && e.user?.id === userId);
  /** Resolves with the events received up to and including the MessageAdded of `messageId`. */
  async function untilMessage(sub: Subscription<RoomEventsResult>, messageId: string, what: string) {
    await waitFor(
      () => eventsOf(sub).some((e) => e.__typename === 'MessageAdded' && e.message?.id === messageId),
      5000,
      what,
    );
    const all = eventsOf(sub);
    return all.slice(0, all.findIndex((e) => e.__typename === 'MessageAdded' && e.message?.id === messageId) + 1);
  }

  describe('when others send messages', () => {
    it('should count them as unread for the other members and not for the sender', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      expect(await roomState(a, bob, roomId)).toMatchObject({ unreadCount: 0, lastReadMessageId: null });
      const msgs = await sendMany(a, owner, roomId, 3);
      expect(await roomState(b, bob, roomId)).toMatchObject({ unreadCount: 3, lastReadMessageId: null });
      // Sending marks the sender's own message read.
      expect(await roomState(b, owner, roomId)).toMatchObject({ unreadCount: 0, lastReadMessageId: msgs[2]?.id });
    });
  });

  describe('when the viewer sends messages themself', () => {
    it('should never count their own messages as unread', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      await sendMany(a, owner, roomId, 2);
      const mine = await send(b, bob, roomId, 'my reply');
      // Bob's own message moves his watermark to it.
      expect(await roomState(a, bob, roomId)).toMatchObject({ unreadCount: 0, lastReadMessageId: mine.id });
      expect((await roomState(a, owner, roomId)).unreadCount).toBe(1);
      await sendMany(b, bob, roomId, 2);
      expect((await roomState(a, bob, roomId)).unreadCount).toBe(0);
      expect((await roomState(a, owner, roomId)).unreadCount).toBe(3);
      await send(a, owner, roomId);
      expect((await roomState(b, bob, roomId)).unreadCount).toBe(1);
      expect((await roomState(b, owner, roomId)).unreadCount).toBe(0);
    });
  });

  describe('when unread messages are deleted', () => {
    it('should stop counting a deleted unread message, and not change for a deleted read one', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 5);
      await markRead(a, bob, roomId, msgs[1]?.id as string);
      expect((await roomState(b, bob, roomId)).unreadCount).toBe(3);
      await del(b, owner, msgs[3]?.id as string);
      expect((await roomState(a, bob, roomId)).unreadCount).toBe(2);
      // Deleting one that was already read changes nothing.
      await del(a, owner, msgs[0]?.id as string);
      expect((await roomState(a, bob, roomId)).unreadCount).toBe(2);
      // Deleting the latest one too.
      await del(a, owner, msgs[4]?.id as string);
      expect((await roomState(b, bob, roomId)).unreadCount).toBe(1);
      // Deleting twice (owner retries) counts once.
      await gql(a.url, DELETE, { messageId: msgs[4]?.id }, { token: owner.token });
      expect((await roomState(b, bob, roomId)).unreadCount).toBe(1);
      // Reading up to a deleted message is fine and leaves nothing unread after it.
      const room = await markRead(b, bob, roomId, msgs[4]?.id as string);
      expect(room).toMatchObject({ unreadCount: 0, lastReadMessageId: msgs[4]?.id });
    });
  });

  describe('when markRead is called with an older message', () => {
    it('should move the watermark forward only', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 5);
      expect(await markRead(a, bob, roomId, msgs[3]?.id as string)).toMatchObject({
        id: roomId,
        unreadCount: 1,
        lastReadMessageId: msgs[3]?.id,
      });
      expect(await markRead(b, bob, roomId, msgs[0]?.id as string)).toMatchObject({
        unreadCount: 1,
        lastReadMessageId: msgs[3]?.id,
      });
      // Also for a private older receipt, and the public readCount stays where it was.
      expect(await markRead(b, bob, roomId, msgs[1]?.id as string, true)).toMatchObject({
        unreadCount: 1,
        lastReadMessageId: msgs[3]?.id,
      });
      expect(await roomState(a, bob, roomId)).toMatchObject({ unreadCount: 1, lastReadMessageId: msgs[3]?.id });
      const r = await reads(a, owner, roomId);
      expect(range(1, 5).map((s) => r.get(s)?.readCount)).toEqual([1, 1, 1, 1, 0]);
    });
  });

  describe('when a member reads on two devices on two instances', () => {
    it('should update the count everywhere and tell the other device, even for a private receipt', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 4);
      const bobOnB = await events(b, bob, roomId);
      const ownerOnB = await events(b, owner, roomId);

      // Device 1 (instance a) reads publicly: device 2 (instance b) sees the count and the event.
      await markRead(a, bob, roomId, msgs[1]?.id as string);
      expect(await roomState(b, bob, roomId)).toMatchObject({ unreadCount: 2, lastReadMessageId: msgs[1]?.id });
      await waitFor(() => receiptsOf(bobOnB, bob.id).length === 1, 5000, "bob's public receipt on his other device");
      expect(receiptsOf(bobOnB, bob.id)[0]).toEqual({
        __typename: 'ReadReceipt',
        roomId,
        user: { id: bob.id },
        messageId: msgs[1]?.id,
      });

      // Device 1 reads privately: a different (room, user, privacy) window, so it is sent at once.
      expect(await markRead(a, bob, roomId, msgs[3]?.id as string, true)).toMatchObject({
        unreadCount: 0,
        lastReadMessageId: msgs[3]?.id,
      });
      expect(await roomState(b, bob, roomId)).toMatchObject({ unreadCount: 0, lastReadMessageId: msgs[3]?.id });
      await waitFor(
        () => receiptsOf(bobOnB, bob.id).some((e) => e.messageId === msgs[3]?.id),
        5000,
        "bob's private receipt on his other device",
      );

      // Sentinel: a message sent through instance a after the receipts, on the same Redis
      // connection that published them, so once it reached the owner the receipts before it did too.
      const sentinel = await send(a, owner, roomId, 'sentinel');
      const ownerSaw = await untilMessage(ownerOnB, sentinel.id, "the owner's sentinel");
      const bobReceiptsSeenByOwner = ownerSaw.filter((e) => e.__typename === 'ReadReceipt' && e.user?.id === bob.id);
      expect(bobReceiptsSeenByOwner.map((e) => e.messageId)).toEqual([msgs[1]?.id]);

      // The private receipt is not counted publicly.
      const r = await reads(b, owner, roomId);
      expect(range(1, 4).map((s) => r.get(s)?.readCount)).toEqual([1, 1, 0, 0]);
      expect(readersOf(r.get(4))).toEqual([]);
    });
  });

  describe('when members read messages', () => {
    it('should count and list the public readers other than the sender, dropping a member who leaves', async () => {
      const [owner, x, y, z] = [await user('owner'), await user('x'), await user('y'), await user('z')];
      const roomId = await createRoom(owner, [x, y, z]);
      const msgs = await sendMany(a, owner, roomId, 2);
      let r = await reads(a, owner, roomId);
      // The sender's own watermark is at their message, yet they are not counted.
      expect([r.get(1)?.readCount, r.get(2)?.readCount]).toEqual([0, 0]);
      expect(readersOf(r.get(1))).toEqual([]);

      await markRead(a, x, roomId, msgs[1]?.id as string);
      // y reads privately: its own state moves, readCount does not.
      expect(await markRead(b, y, roomId, msgs[1]?.id as string, true)).toMatchObject({ unreadCount: 0 });
      r = await reads(b, x, roomId);
      expect([r.get(1)?.readCount, r.get(2)?.readCount]).toEqual([1, 1]);
      expect(readersOf(r.get(1))).toEqual([x.id]);
      expect(readersOf(r.get(2))).toEqual([x.id]);

      // y then reads the first message publicly.
      await markRead(b, y, roomId, msgs[0]?.id as string);
      r = await reads(a, z, roomId);
      expect([r.get(1)?.readCount, r.get(2)?.readCount]).toEqual([2, 1]);
      expect(readersOf(r.get(1))).toEqual([x.id, y.id].sort());
      expect(readersOf(r.get(2))).toEqual([x.id]);
      // readBy(first) caps the list, never the count.
      r = await reads(a, z, roomId, 1);
      expect(r.get(1)?.readBy).toHaveLength(1);
      expect([x.id, y.id]).toContain(r.get(1)?.readBy[0]?.id);
      expect(r.get(1)?.readCount).toBe(2);

      // x's own message: x is the sender and not counted; the owner reads it.
      const third = await send(b, x, roomId, 'from x');
      r = await reads(a, owner, roomId);
      expect(r.get(3)?.readCount).toBe(0);
      expect(readersOf(r.get(3))).toEqual([]);
      await markRead(a, owner, roomId, third.id);
      r = await reads(a, owner, roomId);
      expect(r.get(3)?.readCount).toBe(1);
      expect(readersOf(r.get(3))).toEqual([owner.id]);
      // x's watermark moved to their message: they now count for the owner's two.
      expect([r.get(1)?.readCount, r.get(2)?.readCount]).toEqual([2, 1]);

      // x leaves: no longer counted anywhere.
      expect((await gqlOk<{ leaveRoom: boolean }>(b.url, LEAVE, { roomId }, x.token)).leaveRoom).toBe(true);
      r = await reads(b, owner, roomId);
      expect([r.get(1)?.readCount, r.get(2)?.readCount, r.get(3)?.readCount]).toEqual([1, 0, 1]);
      expect(readersOf(r.get(1))).toEqual([y.id]);
      expect(readersOf(r.get(2))).toEqual([]);
      expect(readersOf(r.get(3))).toEqual([owner.id]);
    });
  });

  describe('when a member leaves and joins a public room again', () => {
    it('should have forgotten their watermark', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob], 'PUBLIC');
      const msgs = await sendMany(a, owner, roomId, 3);
      await markRead(a, bob, roomId, msgs[2]?.id as string);
      await gqlOk(a.url, LEAVE, { roomId }, bob.token);
      expect(await roomState(b, bob, roomId)).toMatchObject({ viewerIsMember: false, unreadCount: 0, lastReadMessageId: null });
      await gqlOk(b.url, `mutation ($roomId: ID!) { joinRoom(roomId: $roomId) { id } }`, { roomId }, bob.token);
      expect(await roomState(a, bob, roomId)).toMatchObject({ viewerIsMember: true, unreadCount: 3, lastReadMessageId: null });
    });
  });

  describe('when markRead gets a message it cannot use', () => {
    it('should answer BAD_USER_INPUT on messageId for a message of another room', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const other = await createRoom(owner, [bob]);
      await send(a, owner, roomId);
      const foreign = await send(a, owner, other);
      expectError(
        await gql(a.url, MARK_READ, { roomId, messageId: foreign.id }, { token: bob.token }),
        'BAD_USER_INPUT',
        'messageId',
      );
      expectError(
        await gql(b.url, MARK_READ, { roomId, messageId: 'not-a-message-id' }, { token: bob.token }),
        'BAD_USER_INPUT',
        'messageId',
      );
      expect(await roomState(a, bob, roomId)).toMatchObject({ unreadCount: 1, lastReadMessageId: null });
    });

    it('should answer NOT_FOUND for a seq beyond the room or an id of another history epoch', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 2);
      const { epoch } = decodeMessageId('messageId', msgs[0]?.id as string);
      expectError(
        await gql(a.url, MARK_READ, { roomId, messageId: encodeMessageId(roomId, 3, epoch) }, { token: bob.token }),
        'NOT_FOUND',
      );
      expectError(
        await gql(b.url, MARK_READ, { roomId, messageId: encodeMessageId(roomId, 1, `${epoch}x`) }, { token: bob.token }),
        'NOT_FOUND',
      );
      expect(await roomState(a, bob, roomId)).toMatchObject({ unreadCount: 2, lastReadMessageId: null });
    });
  });

  describe('when a non-member uses receipts', () => {
    it('should answer FORBIDDEN to markRead in a private or a public room, and unreadCount 0 in a public one', async () => {
      const [owner, bob, mallory] = [await user('owner'), await user('bob'), await user('mallory')];
      const priv = await createRoom(owner, [bob]);
      const pub = await createRoom(owner, [bob], 'PUBLIC');
      const privMsg = await send(a, owner, priv);
      const pubMsgs = await sendMany(a, owner, pub, 2);
      expectError(await gql(a.url, MARK_READ, { roomId: priv, messageId: privMsg.id }, { token: mallory.token }), 'FORBIDDEN');
      expectError(
        await gql(b.url, MARK_READ, { roomId: pub, messageId: pubMsgs[1]?.id, private: true }, { token: mallory.token }),
        'FORBIDDEN',
      );
      expectError(await gql(b.url, MARK_READ, { roomId: pub, messageId: pubMsgs[1]?.id }, { token: mallory.token }), 'FORBIDDEN');
      expect(await roomState(b, mallory, pub)).toMatchObject({ viewerIsMember: false, unreadCount: 0, lastReadMessageId: null });
      // Nothing was recorded for mallory.
      const r = await reads(a, owner, pub);
      expect([r.get(1)?.readCount, r.get(2)?.readCount]).toEqual([0, 0]);
    });
  });

  describe('when a member marks 50 messages read in a row', () => {
    it('should send at most a few coalesced ReadReceipt events, the last carrying the final messageId', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 50);
      const ownerOnB = await events(b, owner, roomId);
      const bobOnB = await events(b, bob, roomId);

      const started = Date.now();
      for (const m of msgs) await markRead(a, bob, roomId, m.id);
      const elapsed = Date.now() - started;
      const last = msgs[49]?.id as string;

      // The final messageId arrives either as the trailing event of the window it fell in or as
      // the first of a new one (whose window then closes with nothing newer): no receipt of bob
      // can follow it. No bounded wait: the event's arrival is the end of coalescing.
      await waitFor(() => receiptsOf(ownerOnB, bob.id).some((e) => e.messageId === last), 5000, 'the final receipt');
      // Sentinel through instance a, the instance whose timers and Redis connection published the
      // receipts, so everything it published before reached the subscribers before it.
      const sentinel = await send(a, owner, roomId, 'sentinel');
      for (const [who, sub] of [
        ['owner', ownerOnB],
        ['bob (own other device)', bobOnB],
      ] as const) {
        const seen = (await untilMessage(sub, sentinel.id, `${who}: the sentinel`)).filter(
          (e) => e.__typename === 'ReadReceipt' && e.user?.id === bob.id,
        );
        expect(seen.length, `${who}: ${seen.length} receipts for 50 marks in ${elapsed} ms`).toBeGreaterThanOrEqual(1);
        expect(seen.length, `${who}: ${seen.length} receipts for 50 marks in ${elapsed} ms`).toBeLessThanOrEqual(3);
        expect(seen[0]?.messageId).toBe(msgs[0]?.id);
        expect(seen.at(-1)?.messageId).toBe(last);
        // Receipts move forward only.
        const seqs = seen.map((e) => decodeMessageId('messageId', e.messageId as string).seq);
        expect([...seqs].sort((p, q) => p - q)).toEqual(seqs);
      }
      // Everything read but the owner's sentinel.
      expect(await roomState(b, bob, roomId)).toMatchObject({ unreadCount: 1, lastReadMessageId: last });
    });

    it('should coalesce across instances when a load balancer spreads the marks over both', async () => {
      const [owner, bob] = [await user('owner'), await user('bob')];
      const roomId = await createRoom(owner, [bob]);
      const msgs = await sendMany(a, owner, roomId, 50);
      const ownerOnB = await events(b, owner, roomId);

      // Round robin over the two instances, the first and the last mark through instance a.
      const via = (i: number) => (i === 0 || i === 49 || i % 2 === 0 ? a : b);
      const started = Date.now();
      for (const [i, m] of msgs.entries()) await markRead(via(i), bob, roomId, m.id);
      const lastMarkAt = Date.now();
      const elapsed = lastMarkAt - started;
      const last = msgs[49]?.id as string;

      // Bounded wait, the only one here: which instance ends coalescing last is not observable, so
      // the sentinels are sent once the 500 ms coalescing window (started at the latest by the last
      // mark) has closed everywhere, with 300 ms of margin for timers and pub/sub.
      await waitFor(() => Date.now() - lastMarkAt > 800, 5000, 'the coalescing window to close');
      const sentinelA = await send(a, owner, roomId, 'sentinel a');
      const sentinelB = await send(b, owner, roomId, 'sentinel b');
      await untilMessage(ownerOnB, sentinelA.id, 'sentinel a');
      const seen = (await untilMessage(ownerOnB, sentinelB.id, 'sentinel b')).filter(
        (e) => e.__typename === 'ReadReceipt' && e.user?.id === bob.id,
      );
      const seqs = seen.map((e) => decodeMessageId('messageId', e.messageId as string).seq);
      const what = `receipts seen by the owner for 50 marks in ${elapsed} ms: seqs ${JSON.stringify(seqs)}`;
      // Soft: each of these is a separate property of the contract, all reported.
      expect.soft(seen.at(-1)?.messageId, `the last one should carry the final messageId; ${what}`).toBe(last);
      expect.soft([...seqs].sort((p, q) => p - q), `receipts should only move forward; ${what}`).toEqual(seqs);
      expect.soft(seen.length, what).toBeGreaterThanOrEqual(1);
      expect.soft(seen.length, what).toBeLessThanOrEqual(3);
    });
  });
});

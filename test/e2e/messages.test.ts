import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AccRoomHistoryDocument,
  AddMembersDocument,
  CreateRoomDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  MessagesDocument,
  OnMessageAddedDocument,
  OnRoomEventsDocument,
  SendMessageDocument,
  type CreateRoomInput,
  type MessagesQuery,
  type MessagesQueryVariables,
} from '../generated/graphql.js';
import {
  expectError,
  gql,
  gqlOk,
  range,
  subscribe,
  urqlClient,
  waitFor,
  wsClient,
} from '../helpers/clients.js';
import { startCluster, type TestInstance, tokenFor, uid, waitForStreams } from '../helpers/server.js';



type History = MessagesQuery['messages'];

/** The seqs of a page, in the order given. */
const seqsOf = (page: History) => page.edges.map((e) => e.node.seq);


describe('when messages flow through two instances', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  const createRoom = async (token: string, input: CreateRoomInput) =>
    (await gqlOk(a.url, CreateRoomDocument, { input }, token)).createRoom;
  const send = async (inst: TestInstance, token: string, roomId: string, text: string, clientId?: string) =>
    (await gqlOk(inst.url, SendMessageDocument, { input: { roomId, text, ...(clientId ? { clientId } : {}) } }, token))
      .sendMessage;
  const history = async (inst: TestInstance, token: string, vars: MessagesQueryVariables) =>
    (await gqlOk(inst.url, MessagesDocument, vars, token)).messages;

  /** A room with an owner and a second member. */
  async function setup(label: string) {
    const owner = uid(`${label}-owner`);
    const member = uid(`${label}-member`);
    const ownerToken = await tokenFor(owner, { name: 'Owner' });
    const memberToken = await tokenFor(member, { name: 'Member' });
    const room = await createRoom(ownerToken, { name: label, memberIds: [member] });
    return { owner, member, ownerToken, memberToken, roomId: room.id };
  }

  describe('when a message is sent', () => {
    it('should store the trimmed text and answer the full message', async () => {
      const { owner, ownerToken, roomId } = await setup('send');
      const before = Date.now();
      const m = await send(a, ownerToken, roomId, '  \n hello world \t ');
      expect(m).toMatchObject({
        roomId,
        seq: 1,
        text: 'hello world',
        clientId: null,
        editedAt: null,
        deleted: false,
        sender: { id: owner, name: 'Owner' },
      });
      expect(Date.parse(m.createdAt)).toBeGreaterThanOrEqual(before - 1000);
      expect(Date.parse(m.createdAt)).toBeLessThanOrEqual(Date.now() + 1000);
      const page = await history(b, ownerToken, { roomId });
      expect(page.edges.map((e) => e.node)).toEqual([m]);
    });

    it('should accept 4000 characters after trimming', async () => {
      const { ownerToken, roomId } = await setup('long');
      const text = 'a'.repeat(4000);
      expect((await send(a, ownerToken, roomId, `  ${text}  `)).text).toBe(text);
    });

    it('should count characters, not UTF-16 code units', async () => {
      const { ownerToken, roomId } = await setup('emoji');
      const text = '😀'.repeat(4000);
      expect((await send(a, ownerToken, roomId, text)).text).toBe(text);
    });

    it.each([
      ['4001 characters long', 'a'.repeat(4001)],
      ['4001 emoji long', '😀'.repeat(4001)],
      ['empty', ''],
      ['whitespace only', ' \n\t  '],
    ])('should refuse a text that is %s with BAD_USER_INPUT on field text, storing nothing', async (_label, text) => {
      const { ownerToken, roomId } = await setup('refused');
      const r = await gql(b.url, SendMessageDocument, { input: { roomId, text } }, { token: ownerToken });
      expectError(r, 'BAD_USER_INPUT', 'text');
      expect(r.data ?? null).toBeNull();
      expect((await history(a, ownerToken, { roomId })).edges).toEqual([]);
      expect((await send(a, ownerToken, roomId, 'next')).seq).toBe(1);
    });

    it('should number messages 1, 2, 3 without gaps across instances', async () => {
      const { ownerToken, memberToken, roomId } = await setup('seq');
      const m1 = await send(a, ownerToken, roomId, 'one');
      const m2 = await send(b, memberToken, roomId, 'two');
      const m3 = await send(a, memberToken, roomId, 'three');
      expect([m1.seq, m2.seq, m3.seq]).toEqual([1, 2, 3]);
      expect(new Set([m1.id, m2.id, m3.id]).size).toBe(3);
    });

    it('should give concurrent messages distinct, gapless seqs', async () => {
      const { ownerToken, memberToken, roomId } = await setup('burst');
      const sent = await Promise.all(
        range(1, 30).map((i) => send(i % 2 ? a : b, i % 3 ? ownerToken : memberToken, roomId, `burst ${i}`)),
      );
      expect(sent.map((m) => m.seq).sort((x, y) => x - y)).toEqual(range(1, 30));
      const page = await history(b, ownerToken, { roomId, first: 100 });
      expect(seqsOf(page)).toEqual(range(1, 30));
      expect(page.edges.map((e) => e.node.text).sort()).toEqual(sent.map((m) => m.text).sort());
    });

    it('should give messages ids that are globally unique across rooms', async () => {
      const one = await setup('ids-1');
      const two = await setup('ids-2');
      const m1 = await send(a, one.ownerToken, one.roomId, 'first');
      const m2 = await send(a, two.ownerToken, two.roomId, 'first');
      expect(m1.seq).toBe(m2.seq);
      expect(m1.id).not.toBe(m2.id);
    });

    it('should accept a message id as a history cursor and a subscription cursor', async () => {
      const { ownerToken, roomId } = await setup('cursor');
      const sent = [];
      for (let i = 1; i <= 5; i++) sent.push(await send(i % 2 ? a : b, ownerToken, roomId, `c${i}`));
      const after = await history(b, ownerToken, { roomId, first: 10, after: sent[1]!.id });
      expect(seqsOf(after)).toEqual([3, 4, 5]);
      const before = await history(a, ownerToken, { roomId, last: 10, before: sent[3]!.id });
      expect(seqsOf(before)).toEqual([1, 2, 3]);
      const page = await history(a, ownerToken, { roomId });
      expect(page.edges.map((e) => e.cursor)).toEqual(page.edges.map((e) => e.node.id));

      const client = wsClient(b.wsUrl, ownerToken);
      try {
        const sub = subscribe(client, OnMessageAddedDocument, { roomId, after: sent[2]!.id });
        const replay = await sub.take(2);
        expect(replay.map((r) => r.data?.messageAdded.seq)).toEqual([4, 5]);
      } finally {
        await client.dispose();
      }
    });

    it('should refuse a message to a room that does not exist with NOT_FOUND', async () => {
      const r = await gql(a.url, SendMessageDocument, { input: { roomId: 'no-such-room', text: 'hello?' } }, { token: await tokenFor(uid('lost')) });
      expectError(r, 'NOT_FOUND');
    });
  });

  describe('when a message is sent with a clientId', () => {
    it('should store exactly one message for 20 concurrent sends spread over two instances', async () => {
      const { ownerToken, roomId } = await setup('dedupe');
      const clientId = uid('client');
      const results = await Promise.all(
        range(1, 20).map((i) => send(i % 2 ? a : b, ownerToken, roomId, `attempt ${i}`, clientId)),
      );
      const ids = new Set(results.map((m) => m.id));
      expect(ids.size).toBe(1);
      expect(results.every((m) => m.seq === 1 && m.clientId === clientId)).toBe(true);
      expect(new Set(results.map((m) => m.text)).size).toBe(1);
      const page = await history(a, ownerToken, { roomId });
      expect(page.edges).toHaveLength(1);
      expect(page.edges[0]?.node).toMatchObject({ id: [...ids][0], seq: 1, clientId });
      expect((await send(b, ownerToken, roomId, 'after the retries')).seq).toBe(2);
    });

    it('should answer a later retry with the first message and notify subscribers once', async () => {
      const { ownerToken, memberToken, roomId } = await setup('retry');
      const client = wsClient(a.wsUrl, memberToken);
      try {
        const before = a.app.services.events.openCount();
        const sub = subscribe(client, OnMessageAddedDocument, { roomId });
        await waitForStreams(a, before + 1);
        const first = await send(b, ownerToken, roomId, 'original', 'retry-1');
        const again = await send(a, ownerToken, roomId, 'changed on retry', 'retry-1');
        expect(again).toEqual(first);
        const next = await send(b, ownerToken, roomId, 'next one');
        const events = await sub.take(2);
        expect(events.map((e) => e.data?.messageAdded.id)).toEqual([first.id, next.id]);
        expect(next.seq).toBe(2);
      } finally {
        await client.dispose();
      }
    });

    it('should treat the same clientId from another user as a new message', async () => {
      const { ownerToken, memberToken, roomId } = await setup('other-user');
      const m1 = await send(a, ownerToken, roomId, 'mine', 'shared-client-id');
      const m2 = await send(b, memberToken, roomId, 'theirs', 'shared-client-id');
      expect(m2.id).not.toBe(m1.id);
      expect([m1.seq, m2.seq]).toEqual([1, 2]);
      expect(m2.text).toBe('theirs');
    });

    it('should treat the same clientId in another room as a new message', async () => {
      const { owner, ownerToken, roomId } = await setup('room-1');
      const other = await createRoom(ownerToken, { name: 'room-2' });
      const m1 = await send(a, ownerToken, roomId, 'here', `${owner}-cid`);
      const m2 = await send(b, ownerToken, other.id, 'there', `${owner}-cid`);
      expect(m2.id).not.toBe(m1.id);
      expect(m2).toMatchObject({ roomId: other.id, seq: 1, text: 'there' });
    });

    it.each([
      ['empty', ''],
      ['129 characters long', 'c'.repeat(129)],
    ])('should refuse a clientId that is %s with BAD_USER_INPUT on field clientId', async (_label, clientId) => {
      const { ownerToken, roomId } = await setup('bad-cid');
      const r = await gql(a.url, SendMessageDocument, { input: { roomId, text: 'x', clientId } }, { token: ownerToken });
      expectError(r, 'BAD_USER_INPUT', 'clientId');
    });
  });

  describe('when a message is edited', () => {
    it('should let the author change the text and set editedAt', async () => {
      const { member, memberToken, ownerToken, roomId } = await setup('edit');
      const m = await send(a, memberToken, roomId, 'typo');
      const { editMessage } = await gqlOk(b.url, EditMessageDocument, { messageId: m.id, text: '  fixed  ' }, memberToken);
      expect(editMessage).toMatchObject({ id: m.id, seq: 1, text: 'fixed', deleted: false, sender: { id: member } });
      expect(editMessage.editedAt).not.toBeNull();
      expect(Date.parse(editMessage.editedAt!)).toBeGreaterThanOrEqual(Date.parse(m.createdAt));
      expect(editMessage.createdAt).toBe(m.createdAt);
      const page = await history(a, ownerToken, { roomId });
      expect(page.edges[0]?.node).toEqual(editMessage);
    });

    it.each([
      ['another member', 'memberToken'],
      ['the room owner', 'ownerToken'],
    ] as const)('should refuse %s with FORBIDDEN and keep the text', async (_label, who) => {
      const ctx = await setup('edit-forbidden');
      // The author is a third member, so neither the owner nor the other member wrote the message.
      const author = uid('author');
      const authorToken = await tokenFor(author);
      const { addMembers } = await gqlOk(a.url, AddMembersDocument, { roomId: ctx.roomId, userIds: [author] }, ctx.ownerToken);
      expect(addMembers.memberCount).toBe(3);
      const m = await send(b, authorToken, ctx.roomId, 'mine alone');
      const r = await gql(a.url, EditMessageDocument, { messageId: m.id, text: 'not yours' }, { token: ctx[who] });
      expectError(r, 'FORBIDDEN');
      const page = await history(b, authorToken, { roomId: ctx.roomId });
      expect(page.edges[0]?.node).toMatchObject({ id: m.id, text: 'mine alone', editedAt: null });
    });

    it('should refuse editing a deleted message with CONFLICT', async () => {
      const { memberToken, roomId } = await setup('edit-deleted');
      const m = await send(a, memberToken, roomId, 'soon gone');
      await gqlOk(b.url, DeleteMessageDocument, { messageId: m.id }, memberToken);
      const r = await gql(a.url, EditMessageDocument, { messageId: m.id, text: 'back?' }, { token: memberToken });
      expectError(r, 'CONFLICT');
      const page = await history(b, memberToken, { roomId });
      expect(page.edges[0]?.node).toMatchObject({ text: '', deleted: true });
    });

    it.each([
      ['4001 characters long', 'a'.repeat(4001)],
      ['whitespace only', '   '],
      ['empty', ''],
    ])('should refuse a new text that is %s with BAD_USER_INPUT on field text', async (_label, text) => {
      const { memberToken, roomId } = await setup('edit-limits');
      const m = await send(a, memberToken, roomId, 'keep me');
      const r = await gql(b.url, EditMessageDocument, { messageId: m.id, text }, { token: memberToken });
      expectError(r, 'BAD_USER_INPUT', 'text');
      expect((await history(a, memberToken, { roomId })).edges[0]?.node).toMatchObject({ text: 'keep me', editedAt: null });
    });

    it('should accept a new text of 4000 characters', async () => {
      const { memberToken, roomId } = await setup('edit-4000');
      const m = await send(a, memberToken, roomId, 'short');
      const text = 'z'.repeat(4000);
      const { editMessage } = await gqlOk(b.url, EditMessageDocument, { messageId: m.id, text }, memberToken);
      expect(editMessage.text).toBe(text);
    });

    it('should refuse a malformed message id with BAD_USER_INPUT on field messageId', async () => {
      const { memberToken } = await setup('edit-malformed');
      for (const messageId of ['not-a-message-id', '', Buffer.from('room:0').toString('base64url')]) {
        const r = await gql(a.url, EditMessageDocument, { messageId, text: 'x' }, { token: memberToken });
        expectError(r, 'BAD_USER_INPUT', 'messageId');
      }
    });

    it('should publish edits and deletions to roomEvents subscribers on the other instance', async () => {
      const { ownerToken, memberToken, roomId } = await setup('edit-events');
      const m = await send(a, memberToken, roomId, 'draft');
      const client = wsClient(b.wsUrl, ownerToken);
      try {
        const before = b.app.services.events.openCount();
        const sub = subscribe(client, OnRoomEventsDocument, { roomId });
        await waitForStreams(b, before + 1);
        const { editMessage } = await gqlOk(a.url, EditMessageDocument, { messageId: m.id, text: 'final' }, memberToken);
        await gqlOk(a.url, DeleteMessageDocument, { messageId: m.id }, ownerToken);
        const events = await sub.take(2);
        expect(events.map((e) => e.data?.roomEvents)).toEqual([
          { __typename: 'MessageEdited', message: { id: m.id, text: 'final', editedAt: editMessage.editedAt } },
          { __typename: 'MessageDeleted', message: { id: m.id, deleted: true } },
        ]);
      } finally {
        await client.dispose();
      }
    });
  });

  describe('when a message is deleted', () => {
    it('should let the author delete it: empty text, deleted, same id and seq, idempotently', async () => {
      const { memberToken, ownerToken, roomId } = await setup('delete');
      const m1 = await send(a, memberToken, roomId, 'keep');
      const m2 = await send(a, memberToken, roomId, 'remove me');
      const m3 = await send(b, ownerToken, roomId, 'after');
      const { deleteMessage } = await gqlOk(b.url, DeleteMessageDocument, { messageId: m2.id }, memberToken);
      expect(deleteMessage).toMatchObject({ id: m2.id, seq: 2, text: '', deleted: true });
      const { deleteMessage: again } = await gqlOk(a.url, DeleteMessageDocument, { messageId: m2.id }, memberToken);
      expect(again).toMatchObject({ id: m2.id, seq: 2, text: '', deleted: true });
      const page = await history(a, ownerToken, { roomId });
      expect(page.edges.map((e) => [e.node.seq, e.node.text, e.node.deleted])).toEqual([
        [1, 'keep', false],
        [2, '', true],
        [3, 'after', false],
      ]);
      expect(page.edges.map((e) => e.node.id)).toEqual([m1.id, m2.id, m3.id]);
      expect((await send(b, memberToken, roomId, 'next')).seq).toBe(4);
    });

    it("should let the room owner delete another member's message", async () => {
      const { memberToken, ownerToken, roomId } = await setup('owner-delete');
      const m = await send(a, memberToken, roomId, 'inappropriate');
      const { deleteMessage } = await gqlOk(b.url, DeleteMessageDocument, { messageId: m.id }, ownerToken);
      expect(deleteMessage).toMatchObject({ id: m.id, text: '', deleted: true });
    });

    it('should refuse a member who is neither the author nor the owner with FORBIDDEN', async () => {
      const { memberToken, ownerToken, roomId } = await setup('delete-forbidden');
      const m = await send(a, ownerToken, roomId, "owner's words");
      const r = await gql(b.url, DeleteMessageDocument, { messageId: m.id }, { token: memberToken });
      expectError(r, 'FORBIDDEN');
      expect((await history(a, ownerToken, { roomId })).edges[0]?.node).toMatchObject({ text: "owner's words", deleted: false });
    });

    it('should refuse a malformed message id with BAD_USER_INPUT on field messageId', async () => {
      const { memberToken } = await setup('delete-malformed');
      const r = await gql(b.url, DeleteMessageDocument, { messageId: 'not-a-message-id' }, { token: memberToken });
      expectError(r, 'BAD_USER_INPUT', 'messageId');
    });

    it('should keep a deleted message as the room lastMessage with its seq', async () => {
      const { ownerToken, roomId } = await setup('delete-last');
      await send(a, ownerToken, roomId, 'one');
      const m2 = await send(a, ownerToken, roomId, 'two');
      await gqlOk(b.url, DeleteMessageDocument, { messageId: m2.id }, ownerToken);
      const { room } = await gqlOk(a.url, AccRoomHistoryDocument, { id: roomId }, ownerToken);
      expect(room?.lastMessage).toEqual({ id: m2.id, seq: 2, text: '' });
    });
  });

  describe('when reading the history of a room with 120 messages', () => {
    let roomId: string;
    let token: string;
    let ids: string[];
    let otherRoomMessageId: string;
    beforeAll(async () => {
      const ctx = await setup('history');
      roomId = ctx.roomId;
      token = ctx.ownerToken;
      ids = [];
      for (let i = 1; i <= 120; i++) ids.push((await send(i % 2 ? a : b, i % 3 ? ctx.ownerToken : ctx.memberToken, roomId, `m${i}`)).id);
      const other = await setup('history-other');
      otherRoomMessageId = (await send(a, other.ownerToken, other.roomId, 'elsewhere')).id;
    });
    const id = (seq: number) => ids[seq - 1]!;

    it('should give the last 50, oldest first, when neither first nor last is given', async () => {
      const page = await history(a, token, { roomId });
      expect(seqsOf(page)).toEqual(range(71, 120));
      expect(page.edges.map((e) => e.node.text)).toEqual(range(71, 120).map((i) => `m${i}`));
      expect(page.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: false, startCursor: id(71), endCursor: id(120) });
    });

    it('should page forward from the start with first', async () => {
      const page = await history(b, token, { roomId, first: 10 });
      expect(seqsOf(page)).toEqual(range(1, 10));
      expect(page.pageInfo).toEqual({ hasPreviousPage: false, hasNextPage: true, startCursor: id(1), endCursor: id(10) });
    });

    it('should page forward with first/after', async () => {
      const page = await history(a, token, { roomId, first: 10, after: id(10) });
      expect(seqsOf(page)).toEqual(range(11, 20));
      expect(page.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: true, startCursor: id(11), endCursor: id(20) });
    });

    it('should end a forward walk at the newest message', async () => {
      const page = await history(b, token, { roomId, first: 10, after: id(115) });
      expect(seqsOf(page)).toEqual(range(116, 120));
      expect(page.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: false, startCursor: id(116), endCursor: id(120) });
    });

    it('should answer an empty page with no next page after the newest message', async () => {
      const page = await history(a, token, { roomId, first: 10, after: id(120) });
      expect(page.edges).toEqual([]);
      expect(page.pageInfo).toMatchObject({ hasNextPage: false, startCursor: null, endCursor: null });
    });

    it('should page backward from the end with last', async () => {
      const page = await history(b, token, { roomId, last: 10 });
      expect(seqsOf(page)).toEqual(range(111, 120));
      expect(page.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: false, startCursor: id(111), endCursor: id(120) });
    });

    it('should page backward with last/before, oldest first within the page', async () => {
      const page = await history(a, token, { roomId, last: 10, before: id(111) });
      expect(seqsOf(page)).toEqual(range(101, 110));
      expect(page.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: true, startCursor: id(101), endCursor: id(110) });
    });

    it('should end a backward walk at the oldest message', async () => {
      const page = await history(b, token, { roomId, last: 10, before: id(5) });
      expect(seqsOf(page)).toEqual(range(1, 4));
      expect(page.pageInfo).toEqual({ hasPreviousPage: false, hasNextPage: true, startCursor: id(1), endCursor: id(4) });
    });

    it('should answer an empty page with no previous page before the oldest message', async () => {
      const page = await history(a, token, { roomId, last: 10, before: id(1) });
      expect(page.edges).toEqual([]);
      expect(page.pageInfo).toMatchObject({ hasPreviousPage: false, startCursor: null, endCursor: null });
    });

    it('should return every seq exactly once walking backward with last/before', async () => {
      const seen: number[] = [];
      let before: string | null = null;
      for (let i = 0; i < 20; i++) {
        const page: History = await history(i % 2 ? a : b, token, { roomId, last: 17, before });
        expect(seqsOf(page)).toEqual([...seqsOf(page)].sort((x, y) => x - y));
        seen.unshift(...seqsOf(page));
        if (!page.pageInfo.hasPreviousPage) break;
        before = page.pageInfo.startCursor;
      }
      expect(seen).toEqual(range(1, 120));
    });

    it('should return every seq exactly once walking forward with first/after', async () => {
      const seen: number[] = [];
      let after: string | null = null;
      for (let i = 0; i < 20; i++) {
        const page: History = await history(i % 2 ? a : b, token, { roomId, first: 17, after });
        seen.push(...seqsOf(page));
        if (!page.pageInfo.hasNextPage) break;
        after = page.pageInfo.endCursor;
      }
      expect(seen).toEqual(range(1, 120));
    });

    it('should serve Room.messages like Query.messages and give the latest as Room.lastMessage', async () => {
      const { room } = await gqlOk(b.url, AccRoomHistoryDocument, { id: roomId, last: 5, before: id(50) }, token);
      expect(room?.messages.edges.map((e) => e.node.seq)).toEqual(range(45, 49));
      expect(room?.messages.pageInfo).toEqual({ hasPreviousPage: true, hasNextPage: true, startCursor: id(45), endCursor: id(49) });
      expect(room?.lastMessage).toEqual({ id: id(120), seq: 120, text: 'm120' });
    });

    it('should refuse first and last together with BAD_USER_INPUT', async () => {
      expectError(await gql(a.url, MessagesDocument, { roomId, first: 5, last: 5 }, { token }), 'BAD_USER_INPUT');
    });

    it.each(['after', 'before'] as const)('should refuse a %s cursor from another room with BAD_USER_INPUT', async (arg) => {
      const r = await gql(a.url, MessagesDocument, { roomId, [arg]: otherRoomMessageId }, { token });
      expectError(r, 'BAD_USER_INPUT', arg);
    });

    it.each(['after', 'before'] as const)('should refuse a malformed %s cursor with BAD_USER_INPUT', async (arg) => {
      for (const cursor of ['garbage', '', Buffer.from(`${roomId}:zero`).toString('base64url'), Buffer.from(`${roomId}:0`).toString('base64url')]) {
        const r = await gql(b.url, MessagesDocument, { roomId, [arg]: cursor }, { token });
        expectError(r, 'BAD_USER_INPUT', arg);
      }
    });

    it.each([
      ['first', 101],
      ['last', 101],
      ['first', -1],
      ['last', -1],
    ] as const)('should refuse %s: %i with BAD_USER_INPUT on that field', async (arg, value) => {
      const r = await gql(a.url, MessagesDocument, { roomId, [arg]: value }, { token });
      expectError(r, 'BAD_USER_INPUT', arg);
    });

    it('should accept first: 100 and last: 100', async () => {
      expect(seqsOf(await history(a, token, { roomId, first: 100 }))).toEqual(range(1, 100));
      expect(seqsOf(await history(b, token, { roomId, last: 100 }))).toEqual(range(21, 120));
    });
  });

  describe('when reading the history of an empty room', () => {
    it('should give no edges and no pages either way', async () => {
      const { ownerToken, roomId } = await setup('empty');
      const empty = { edges: [], pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null } };
      expect(await history(a, ownerToken, { roomId })).toEqual(empty);
      expect(await history(b, ownerToken, { roomId, first: 10 })).toEqual(empty);
      expect(await history(a, ownerToken, { roomId, last: 10 })).toEqual(empty);
      const { room } = await gqlOk(b.url, AccRoomHistoryDocument, { id: roomId }, ownerToken);
      expect(room?.lastMessage).toBeNull();
      expect(room?.messages).toEqual(empty);
    });
  });

  describe('when the client is urql', () => {
    it('should send a message, read history and receive live messages', async () => {
      const { owner, ownerToken, memberToken, roomId } = await setup('urql');
      const ws = wsClient(a.wsUrl, ownerToken);
      const client = urqlClient(a.url, ws, ownerToken);
      const received: { id: string; text: string }[] = [];
      const before = a.app.services.events.openCount();
      const live = client.subscription(OnMessageAddedDocument, { roomId }).subscribe((r) => {
        if (r.data) received.push({ id: r.data.messageAdded.id, text: r.data.messageAdded.text });
      });
      try {
        await waitForStreams(a, before + 1);
        const sent = await client.mutation(SendMessageDocument, { input: { roomId, text: ' via urql ', clientId: 'u-1' } }).toPromise();
        expect(sent.error).toBeUndefined();
        expect(sent.data?.sendMessage).toMatchObject({ seq: 1, text: 'via urql', clientId: 'u-1', sender: { id: owner } });

        const fromB = await send(b, memberToken, roomId, 'to urql');
        const read = await client.query(MessagesDocument, { roomId }, { requestPolicy: 'network-only' }).toPromise();
        expect(read.error).toBeUndefined();
        expect(read.data?.messages.edges.map((e) => e.node.id)).toEqual([sent.data?.sendMessage.id, fromB.id]);

        await waitFor(() => received.length >= 2, 5000, 'urql to receive both messages');
        expect(received).toEqual([
          { id: sent.data?.sendMessage.id, text: 'via urql' },
          { id: fromB.id, text: 'to urql' },
        ]);

        const refused = await client.mutation(SendMessageDocument, { input: { roomId, text: '   ' } }).toPromise();
        expect(refused.error?.graphQLErrors.map((e) => e.extensions.code)).toEqual(['BAD_USER_INPUT']);
      } finally {
        live.unsubscribe();
        await ws.dispose();
      }
    });
  });
});

import { randomBytes } from 'node:crypto';
import type { GraphQLFormattedError } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AccPublicRoomsPageDocument,
  AccRoomHistoryDocument,
  AccRoomMembersPageDocument,
  AccRoomsPageDocument,
  AddMembersDocument,
  CreateRoomDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  JoinRoomDocument,
  LeaveRoomDocument,
  MessagesDocument,
  MyRoomsDocument,
  OnMessageAddedDocument,
  OnRoomEventsDocument,
  RemoveMemberDocument,
  RoomDocument,
  SendMessageDocument,
  UserByIdDocument,
  type CreateRoomInput,
} from '../generated/graphql.js';
import {
  codes,
  expectError,
  gql,
  gqlOk,
  subscribe,
  type Subscription,
  waitFor,
  withTimeout,
  wsClient,
} from '../helpers/clients.js';
import { startCluster, type TestInstance, tokenFor, uid, waitForStreams } from '../helpers/server.js';



/** The codes of the errors a graphql-ws subscription answered with, whether as a result or as an `error` message. */
async function subscriptionErrorCodes(sub: Subscription<unknown>, ms = 5000): Promise<unknown[]> {
  await waitFor(() => sub.results.length > 0 || sub.done(), ms, 'the subscription to answer');
  const first = sub.results[0];
  if (first) {
    expect(first.data ?? null).toBeNull();
    return codes(first.errors as GraphQLFormattedError[] | undefined);
  }
  const err = await withTimeout(sub.error, ms, 'the subscription error');
  return (Array.isArray(err) ? err : [err]).map((e) => (e as GraphQLFormattedError).extensions?.code);
}

interface Page<T> {
  edges: { cursor: string; node: T }[];
  pageInfo: { hasNextPage: boolean; hasPreviousPage: boolean; endCursor?: string | null };
}

/** Follows `endCursor` until `hasNextPage` is false; returns every page. */
async function walkForward<T>(fetchPage: (after: string | null) => Promise<Page<T>>, maxPages = 50): Promise<Page<T>[]> {
  const pages: Page<T>[] = [];
  let after: string | null = null;
  for (let i = 0; i < maxPages; i++) {
    const page = await fetchPage(after);
    pages.push(page);
    if (!page.pageInfo.hasNextPage) return pages;
    after = page.pageInfo.endCursor ?? null;
    expect(after, 'a page with a next page has an endCursor').not.toBeNull();
  }
  throw new Error(`pagination did not end within ${maxPages} pages`);
}

describe('when using rooms on two instances', () => {
  let a: TestInstance;
  let b: TestInstance;
  beforeAll(async () => {
    [a, b] = (await startCluster(2)) as [TestInstance, TestInstance];
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  const create = async (inst: TestInstance, token: string, input: CreateRoomInput) =>
    (await gqlOk(inst.url, CreateRoomDocument, { input }, token)).createRoom;

  describe('when a room is created', () => {
    it('should make the creator its owner and a member, with the given members', async () => {
      const owner = uid('owner');
      const [m1, m2] = [uid('m1'), uid('m2')];
      const token = await tokenFor(owner, { name: 'The Owner' });
      const room = await create(a, token, { name: 'team', memberIds: [m1, m2] });
      expect(room).toMatchObject({
        name: 'team',
        owner: { id: owner, name: 'The Owner' },
        memberCount: 3,
        viewerIsMember: true,
      });
      expect(Date.parse(room.createdAt)).not.toBeNaN();
      const { room: seen } = await gqlOk(b.url, AccRoomMembersPageDocument, { id: room.id }, await tokenFor(m1));
      expect(seen?.members.edges.map((e) => e.node.id).sort()).toEqual([owner, m1, m2].sort());
    });

    it('should default the visibility to PRIVATE', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: 'default' });
      expect(room.visibility).toBe('PRIVATE');
    });

    it('should create a PUBLIC room when asked', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: 'open', visibility: 'PUBLIC' });
      expect(room.visibility).toBe('PUBLIC');
    });

    it('should trim the name', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: '  \t lobby \n ' });
      expect(room.name).toBe('lobby');
    });

    it('should accept a name of 100 characters after trimming', async () => {
      const name = 'n'.repeat(100);
      const room = await create(a, await tokenFor(uid('owner')), { name: `  ${name}  ` });
      expect(room.name).toBe(name);
    });

    it.each([
      ['empty', ''],
      ['whitespace only', '   \t\n '],
      ['101 characters long', 'x'.repeat(101)],
    ])('should refuse a name that is %s with BAD_USER_INPUT on field name', async (_label, name) => {
      const user = uid('owner');
      const token = await tokenFor(user);
      const r = await gql(a.url, CreateRoomDocument, { input: { name } }, { token });
      expectError(r, 'BAD_USER_INPUT', 'name');
      expect(r.data ?? null).toBeNull();
      expect((await gqlOk(b.url, MyRoomsDocument, {}, token)).rooms.edges).toEqual([]);
    });

    it.each([
      ['an empty id', ['']],
      ['more than 100 ids', Array.from({ length: 101 }, (_, i) => `crowd-${i}`)],
    ])('should refuse memberIds with %s with BAD_USER_INPUT on field memberIds', async (_label, memberIds) => {
      const token = await tokenFor(uid('owner'));
      const r = await gql(a.url, CreateRoomDocument, { input: { name: 'bad members', memberIds } }, { token });
      expectError(r, 'BAD_USER_INPUT', 'memberIds');
      expect((await gqlOk(b.url, MyRoomsDocument, {}, token)).rooms.edges).toEqual([]);
    });

    it('should accept 100 members besides the creator', async () => {
      const tag = uid('hundred');
      const memberIds = Array.from({ length: 100 }, (_, i) => `${tag}-${i}`);
      const room = await create(a, await tokenFor(uid('owner')), { name: 'hundred', memberIds });
      expect(room.memberCount).toBe(101);
    });

    it('should count the creator and repeated member ids once', async () => {
      const owner = uid('owner');
      const bob = uid('bob');
      const room = await create(a, await tokenFor(owner), { name: 'dupes', memberIds: [bob, bob, owner] });
      expect(room.memberCount).toBe(2);
    });

    it('should list the room for every member, on either instance', async () => {
      const owner = uid('owner');
      const bob = uid('bob');
      const room = await create(a, await tokenFor(owner), { name: 'shared', memberIds: [bob] });
      const { rooms } = await gqlOk(b.url, MyRoomsDocument, {}, await tokenFor(bob));
      expect(rooms.edges.map((e) => e.node.id)).toEqual([room.id]);
      expect(rooms.edges[0]?.node.viewerIsMember).toBe(true);
    });

    it('should make members who never signed in exist, named by their id', async () => {
      const ghost = uid('ghost');
      const token = await tokenFor(uid('owner'));
      await create(a, token, { name: 'ghosts', memberIds: [ghost] });
      expect((await gqlOk(b.url, UserByIdDocument, { id: ghost }, token)).user).toEqual({ id: ghost, name: ghost });
    });
  });

  describe('when a room is read by id', () => {
    it('should answer null, without an error, when the room does not exist', async () => {
      const r = await gql(a.url, RoomDocument, { id: 'no-such-room' }, { token: await tokenFor(uid('reader')) });
      expect(r.errors).toBeUndefined();
      expect(r.data).toEqual({ room: null });
    });

    it('should answer FORBIDDEN and no room for a private room the viewer is not in', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: 'secret' });
      const r = await gql(b.url, RoomDocument, { id: room.id }, { token: await tokenFor(uid('outsider')) });
      expectError(r, 'FORBIDDEN');
      expect(r.data?.room ?? null).toBeNull();
    });

    it('should show a public room to a non-member', async () => {
      const owner = uid('owner');
      const room = await create(a, await tokenFor(owner), { name: 'plaza', visibility: 'PUBLIC' });
      const { room: seen } = await gqlOk(b.url, RoomDocument, { id: room.id }, await tokenFor(uid('visitor')));
      expect(seen).toMatchObject({
        id: room.id,
        name: 'plaza',
        visibility: 'PUBLIC',
        owner: { id: owner },
        memberCount: 1,
        viewerIsMember: false,
      });
    });

    it('should show a private room to its members on the other instance', async () => {
      const bob = uid('bob');
      const room = await create(a, await tokenFor(uid('owner')), { name: 'inner', memberIds: [bob] });
      const { room: seen } = await gqlOk(b.url, RoomDocument, { id: room.id }, await tokenFor(bob));
      expect(seen).toMatchObject({ id: room.id, name: 'inner', memberCount: 2, viewerIsMember: true });
    });
  });

  describe('when a user joins a room', () => {
    it('should add them to a public room, idempotently', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: 'joinable', visibility: 'PUBLIC' });
      const joiner = await tokenFor(uid('joiner'));
      const first = (await gqlOk(b.url, JoinRoomDocument, { roomId: room.id }, joiner)).joinRoom;
      expect(first).toMatchObject({ id: room.id, memberCount: 2, viewerIsMember: true });
      const again = (await gqlOk(a.url, JoinRoomDocument, { roomId: room.id }, joiner)).joinRoom;
      expect(again).toMatchObject({ id: room.id, memberCount: 2, viewerIsMember: true });
      const { rooms } = await gqlOk(a.url, MyRoomsDocument, {}, joiner);
      expect(rooms.edges.map((e) => e.node.id)).toEqual([room.id]);
    });

    it('should tell roomEvents subscribers on the other instance, with no addedBy', async () => {
      const ownerToken = await tokenFor(uid('owner'));
      const joiner = uid('joiner');
      const room = await create(a, ownerToken, { name: 'announce', visibility: 'PUBLIC' });
      const client = wsClient(a.wsUrl, ownerToken);
      try {
        const before = a.app.services.events.openCount();
        const sub = subscribe(client, OnRoomEventsDocument, { roomId: room.id });
        await waitForStreams(a, before + 1);
        await gqlOk(b.url, JoinRoomDocument, { roomId: room.id }, await tokenFor(joiner));
        expect((await sub.nth(1)).data?.roomEvents).toEqual({ __typename: 'MemberJoined', user: { id: joiner }, addedBy: null });
      } finally {
        await client.dispose();
      }
    });

    it('should refuse a private room with FORBIDDEN and leave it unchanged', async () => {
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'closed' });
      const r = await gql(b.url, JoinRoomDocument, { roomId: room.id }, { token: await tokenFor(uid('intruder')) });
      expectError(r, 'FORBIDDEN');
      expect(r.data ?? null).toBeNull();
      expect((await gqlOk(a.url, RoomDocument, { id: room.id }, ownerToken)).room?.memberCount).toBe(1);
    });

    it('should answer NOT_FOUND for a room that does not exist', async () => {
      const r = await gql(a.url, JoinRoomDocument, { roomId: 'no-such-room' }, { token: await tokenFor(uid('joiner')) });
      expectError(r, 'NOT_FOUND');
    });

    it('should let a room created on A be joined and read on B', async () => {
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'cross', visibility: 'PUBLIC' });
      const sent = (await gqlOk(a.url, SendMessageDocument, { input: { roomId: room.id, text: 'from A' } }, ownerToken)).sendMessage;
      const joiner = await tokenFor(uid('joiner'));
      await gqlOk(b.url, JoinRoomDocument, { roomId: room.id }, joiner);
      const { messages } = await gqlOk(b.url, MessagesDocument, { roomId: room.id }, joiner);
      expect(messages.edges.map((e) => e.node)).toEqual([expect.objectContaining({ id: sent.id, text: 'from A', seq: 1 })]);
      const reply = (await gqlOk(b.url, SendMessageDocument, { input: { roomId: room.id, text: 'from B' } }, joiner)).sendMessage;
      expect(reply.seq).toBe(2);
      const { room: fromA } = await gqlOk(a.url, AccRoomHistoryDocument, { id: room.id }, ownerToken);
      expect(fromA?.messages.edges.map((e) => e.node.text)).toEqual(['from A', 'from B']);
      expect(fromA?.lastMessage?.id).toBe(reply.id);
    });
  });

  describe('when members are added', () => {
    it('should let any member, not only the owner, add users', async () => {
      const bob = uid('bob');
      const carol = uid('carol');
      const room = await create(a, await tokenFor(uid('owner')), { name: 'adders', memberIds: [bob] });
      const { addMembers } = await gqlOk(b.url, AddMembersDocument, { roomId: room.id, userIds: [carol] }, await tokenFor(bob));
      expect(addMembers.memberCount).toBe(3);
      const { rooms } = await gqlOk(a.url, MyRoomsDocument, {}, await tokenFor(carol));
      expect(rooms.edges.map((e) => e.node.id)).toEqual([room.id]);
    });

    it('should be idempotent for users who are already members', async () => {
      const bob = uid('bob');
      const token = await tokenFor(uid('owner'));
      const room = await create(a, token, { name: 'idem', memberIds: [bob] });
      const { addMembers } = await gqlOk(b.url, AddMembersDocument, { roomId: room.id, userIds: [bob, bob] }, token);
      expect(addMembers.memberCount).toBe(2);
    });

    it('should refuse a non-member with FORBIDDEN and add nobody', async () => {
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'guarded' });
      const r = await gql(b.url, AddMembersDocument, { roomId: room.id, userIds: [uid('friend')] }, { token: await tokenFor(uid('outsider')) });
      expectError(r, 'FORBIDDEN');
      expect((await gqlOk(a.url, RoomDocument, { id: room.id }, ownerToken)).room?.memberCount).toBe(1);
    });

    it('should make users added before they ever signed in exist, and take their name at sign-in', async () => {
      const ownerToken = await tokenFor(uid('owner'));
      const newbie = uid('newbie');
      const room = await create(a, ownerToken, { name: 'welcome' });
      expect((await gqlOk(a.url, UserByIdDocument, { id: newbie }, ownerToken)).user).toBeNull();
      await gqlOk(a.url, AddMembersDocument, { roomId: room.id, userIds: [newbie] }, ownerToken);
      expect((await gqlOk(b.url, UserByIdDocument, { id: newbie }, ownerToken)).user).toEqual({ id: newbie, name: newbie });
      const newbieToken = await tokenFor(newbie, { name: 'Newbie Name' });
      const { rooms } = await gqlOk(b.url, MyRoomsDocument, {}, newbieToken);
      expect(rooms.edges.map((e) => e.node.id)).toEqual([room.id]);
      expect((await gqlOk(a.url, UserByIdDocument, { id: newbie }, ownerToken)).user).toEqual({ id: newbie, name: 'Newbie Name' });
    });

    it('should refuse more than 100 users at once with BAD_USER_INPUT on field userIds', async () => {
      const token = await tokenFor(uid('owner'));
      const room = await create(a, token, { name: 'too many' });
      const userIds = Array.from({ length: 101 }, (_, i) => `many-${i}`);
      expectError(await gql(b.url, AddMembersDocument, { roomId: room.id, userIds }, { token }), 'BAD_USER_INPUT', 'userIds');
      expect((await gqlOk(a.url, RoomDocument, { id: room.id }, token)).room?.memberCount).toBe(1);
    });

    it('should tell roomEvents subscribers on the other instance who joined and who added them', async () => {
      const owner = uid('owner');
      const carol = uid('carol');
      const ownerToken = await tokenFor(owner);
      const room = await create(a, ownerToken, { name: 'events' });
      const client = wsClient(a.wsUrl, ownerToken);
      try {
        const before = a.app.services.events.openCount();
        const sub = subscribe(client, OnRoomEventsDocument, { roomId: room.id });
        await waitForStreams(a, before + 1);
        await gqlOk(b.url, AddMembersDocument, { roomId: room.id, userIds: [carol] }, ownerToken);
        expect((await sub.nth(1)).data?.roomEvents).toEqual({
          __typename: 'MemberJoined',
          user: { id: carol },
          addedBy: { id: owner },
        });
      } finally {
        await client.dispose();
      }
    });
  });

  describe('when a member is removed', () => {
    it('should let the owner remove a member, who then loses access', async () => {
      const bob = uid('bob');
      const ownerToken = await tokenFor(uid('owner'));
      const bobToken = await tokenFor(bob);
      const room = await create(a, ownerToken, { name: 'removal', memberIds: [bob] });
      const { removeMember } = await gqlOk(b.url, RemoveMemberDocument, { roomId: room.id, userId: bob }, ownerToken);
      expect(removeMember.memberCount).toBe(1);
      expectError(await gql(a.url, RoomDocument, { id: room.id }, { token: bobToken }), 'FORBIDDEN');
      expectError(
        await gql(a.url, SendMessageDocument, { input: { roomId: room.id, text: 'still here?' } }, { token: bobToken }),
        'FORBIDDEN',
      );
      expect((await gqlOk(b.url, MyRoomsDocument, {}, bobToken)).rooms.edges).toEqual([]);
    });

    it('should refuse a member who is not the owner with FORBIDDEN', async () => {
      const [bob, carol] = [uid('bob'), uid('carol')];
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'peers', memberIds: [bob, carol] });
      const r = await gql(b.url, RemoveMemberDocument, { roomId: room.id, userId: carol }, { token: await tokenFor(bob) });
      expectError(r, 'FORBIDDEN');
      expect((await gqlOk(a.url, RoomDocument, { id: room.id }, ownerToken)).room?.memberCount).toBe(3);
    });

    it('should refuse the owner removing themselves with BAD_USER_INPUT on field userId', async () => {
      const owner = uid('owner');
      const ownerToken = await tokenFor(owner);
      const room = await create(a, ownerToken, { name: 'self', memberIds: [uid('bob')] });
      const r = await gql(a.url, RemoveMemberDocument, { roomId: room.id, userId: owner }, { token: ownerToken });
      expectError(r, 'BAD_USER_INPUT', 'userId');
      expect((await gqlOk(b.url, RoomDocument, { id: room.id }, ownerToken)).room).toMatchObject({ memberCount: 2, owner: { id: owner } });
    });

    it("should end the removed member's live subscriptions within a second", async () => {
      const bob = uid('bob');
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'kick', memberIds: [bob] });
      const client = wsClient(a.wsUrl, await tokenFor(bob));
      try {
        const before = a.app.services.events.openCount();
        const messages = subscribe(client, OnMessageAddedDocument, { roomId: room.id });
        const events = subscribe(client, OnRoomEventsDocument, { roomId: room.id });
        await waitForStreams(a, before + 2);
        await gqlOk(b.url, RemoveMemberDocument, { roomId: room.id, userId: bob }, ownerToken);
        await withTimeout(Promise.all([messages.completed, events.completed]), 1000, 'the subscriptions to end');
        expect(messages.results).toEqual([]);
        expect(events.results.map((r) => r.data?.roomEvents)).toEqual([
          expect.objectContaining({ __typename: 'MemberLeft', user: { id: bob } }),
        ]);
      } finally {
        await client.dispose();
      }
    });
  });

  describe('when a member leaves a room', () => {
    it('should answer true every time and remove them', async () => {
      const bob = uid('bob');
      const bobToken = await tokenFor(bob);
      const ownerToken = await tokenFor(uid('owner'));
      const room = await create(a, ownerToken, { name: 'exit', memberIds: [bob] });
      expect((await gqlOk(b.url, LeaveRoomDocument, { roomId: room.id }, bobToken)).leaveRoom).toBe(true);
      expect((await gqlOk(a.url, LeaveRoomDocument, { roomId: room.id }, bobToken)).leaveRoom).toBe(true);
      expect((await gqlOk(a.url, RoomDocument, { id: room.id }, ownerToken)).room?.memberCount).toBe(1);
      expect((await gqlOk(b.url, MyRoomsDocument, {}, bobToken)).rooms.edges).toEqual([]);
      expectError(await gql(b.url, RoomDocument, { id: room.id }, { token: bobToken }), 'FORBIDDEN');
    });

    it('should answer true for a room the viewer never joined', async () => {
      const room = await create(a, await tokenFor(uid('owner')), { name: 'never', visibility: 'PUBLIC' });
      expect((await gqlOk(b.url, LeaveRoomDocument, { roomId: room.id }, await tokenFor(uid('stranger')))).leaveRoom).toBe(true);
    });

    it('should pass ownership to the remaining member with the smallest id when the owner leaves', async () => {
      const tag = uid('own');
      const owner = `${tag}-0-owner`;
      const [mB, mA, mC] = [`${tag}-b`, `${tag}-a`, `${tag}-c`];
      const ownerToken = await tokenFor(owner);
      const room = await create(a, ownerToken, { name: 'succession', memberIds: [mB, mC, mA] });
      expect((await gqlOk(b.url, LeaveRoomDocument, { roomId: room.id }, ownerToken)).leaveRoom).toBe(true);
      const aToken = await tokenFor(mA);
      const { room: after } = await gqlOk(a.url, RoomDocument, { id: room.id }, aToken);
      expect(after).toMatchObject({ owner: { id: mA }, memberCount: 3 });
      // The new owner has the owner's powers; the former owner has none.
      const { removeMember } = await gqlOk(b.url, RemoveMemberDocument, { roomId: room.id, userId: mC }, aToken);
      expect(removeMember.memberCount).toBe(2);
      expectError(await gql(a.url, RemoveMemberDocument, { roomId: room.id, userId: mB }, { token: ownerToken }), 'FORBIDDEN');
    });

    it('should end their live subscriptions to the room', async () => {
      const bob = uid('bob');
      const bobToken = await tokenFor(bob);
      const room = await create(a, await tokenFor(uid('owner')), { name: 'bye', memberIds: [bob] });
      const client = wsClient(b.wsUrl, bobToken);
      try {
        const before = b.app.services.events.openCount();
        const sub = subscribe(client, OnMessageAddedDocument, { roomId: room.id });
        await waitForStreams(b, before + 1);
        await gqlOk(a.url, LeaveRoomDocument, { roomId: room.id }, bobToken);
        await withTimeout(sub.completed, 1000, 'the subscription to end');
        expect(sub.results).toEqual([]);
      } finally {
        await client.dispose();
      }
    });
  });

  describe.each(['PRIVATE', 'PUBLIC'] as const)('when a user who is not a member uses a %s room', (visibility) => {
    let roomId: string;
    let messageId: string;
    let memberId: string;
    let ownerToken: string;
    let outsiderToken: string;
    beforeAll(async () => {
      memberId = uid('member');
      ownerToken = await tokenFor(uid('owner'));
      outsiderToken = await tokenFor(uid('outsider'));
      roomId = (await create(a, ownerToken, { name: `members only ${visibility}`, visibility, memberIds: [memberId] })).id;
      messageId = (await gqlOk(a.url, SendMessageDocument, { input: { roomId, text: 'original' } }, ownerToken)).sendMessage.id;
    });

    it('should refuse the messages query with FORBIDDEN', async () => {
      const r = await gql(b.url, MessagesDocument, { roomId }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      expect(r.data ?? null).toBeNull();
    });

    it('should refuse Room.messages with FORBIDDEN and show no message', async () => {
      const r = await gql(b.url, AccRoomHistoryDocument, { id: roomId }, { token: outsiderToken });
      expect(codes(r.errors)).toContain('FORBIDDEN');
      expect(r.data?.room?.messages ?? null).toBeNull();
      expect(JSON.stringify(r.body)).not.toContain('original');
    });

    it('should refuse sendMessage with FORBIDDEN and store nothing', async () => {
      const r = await gql(b.url, SendMessageDocument, { input: { roomId, text: 'let me in' } }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      const { messages } = await gqlOk(a.url, MessagesDocument, { roomId }, ownerToken);
      expect(messages.edges.map((e) => e.node.text)).toEqual(['original']);
    });

    it('should refuse editMessage with FORBIDDEN and keep the text', async () => {
      const r = await gql(b.url, EditMessageDocument, { messageId, text: 'defaced' }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      const { messages } = await gqlOk(a.url, MessagesDocument, { roomId }, ownerToken);
      expect(messages.edges[0]?.node).toMatchObject({ text: 'original', editedAt: null });
    });

    it('should refuse deleteMessage with FORBIDDEN and keep the message', async () => {
      const r = await gql(b.url, DeleteMessageDocument, { messageId }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      const { messages } = await gqlOk(a.url, MessagesDocument, { roomId }, ownerToken);
      expect(messages.edges[0]?.node).toMatchObject({ text: 'original', deleted: false });
    });

    it('should refuse addMembers with FORBIDDEN', async () => {
      const r = await gql(b.url, AddMembersDocument, { roomId, userIds: [uid('accomplice')] }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      expect((await gqlOk(a.url, RoomDocument, { id: roomId }, ownerToken)).room?.memberCount).toBe(2);
    });

    it('should refuse removeMember with FORBIDDEN', async () => {
      const r = await gql(b.url, RemoveMemberDocument, { roomId, userId: memberId }, { token: outsiderToken });
      expectError(r, 'FORBIDDEN');
      expect((await gqlOk(a.url, RoomDocument, { id: roomId }, ownerToken)).room?.memberCount).toBe(2);
    });

    it.each([
      ['messageAdded', 'subscription M($roomId: ID!) { messageAdded(roomId: $roomId) { id text } }'],
      ['roomEvents', 'subscription E($roomId: ID!) { roomEvents(roomId: $roomId) { __typename } }'],
    ])('should refuse a %s subscription over graphql-ws with FORBIDDEN', async (_label, doc) => {
      const client = wsClient(b.wsUrl, outsiderToken);
      try {
        const before = b.app.services.events.openCount();
        const sub = subscribe(client, doc, { roomId });
        expect(await subscriptionErrorCodes(sub)).toEqual(['FORBIDDEN']);
        expect(b.app.services.events.openCount()).toBe(before);
      } finally {
        await client.dispose();
      }
    });
  });

  describe('when subscribing to a room that does not exist', () => {
    it('should answer NOT_FOUND over graphql-ws', async () => {
      const client = wsClient(a.wsUrl, await tokenFor(uid('lost')));
      try {
        const sub = subscribe(client, 'subscription M($roomId: ID!) { messageAdded(roomId: $roomId) { id } }', { roomId: 'no-such-room' });
        expect(await subscriptionErrorCodes(sub)).toEqual(['NOT_FOUND']);
      } finally {
        await client.dispose();
      }
    });
  });

  describe("when listing the viewer's rooms", () => {
    it('should list only rooms the viewer is a member of', async () => {
      const alice = uid('alice');
      const aliceToken = await tokenFor(alice);
      const otherToken = await tokenFor(uid('other'));
      const mine = await create(a, aliceToken, { name: 'mine' });
      const invited = await create(b, otherToken, { name: 'invited', memberIds: [alice] });
      await create(a, otherToken, { name: 'not mine' });
      await create(a, otherToken, { name: 'public not joined', visibility: 'PUBLIC' });
      const { rooms } = await gqlOk(b.url, MyRoomsDocument, {}, aliceToken);
      expect(rooms.edges.map((e) => e.node.id).sort()).toEqual([mine.id, invited.id].sort());
      expect(rooms.edges.every((e) => e.node.viewerIsMember)).toBe(true);
    });

    it('should order rooms by latest activity and move a room to the top when a message is sent', async () => {
      const token = await tokenFor(uid('busy'));
      const created: string[] = [];
      for (let i = 0; i < 5; i++) created.push((await create(i % 2 ? a : b, token, { name: `busy ${i}` })).id);
      const before = (await gqlOk(a.url, AccRoomsPageDocument, { first: 10 }, token)).rooms.edges.map((e) => e.node);
      expect(before.map((r) => r.id).sort()).toEqual([...created].sort());
      const expected = [...before].sort(
        (x, y) => Date.parse(y.lastActivityAt) - Date.parse(x.lastActivityAt) || (x.id < y.id ? -1 : 1),
      );
      expect(before.map((r) => r.id)).toEqual(expected.map((r) => r.id));

      // The oldest room gets a message; activity is in milliseconds, so let the clock pass the newest room's.
      const oldest = before[before.length - 1]!;
      const newest = Math.max(...before.map((r) => Date.parse(r.lastActivityAt)));
      await waitFor(() => Date.now() > newest, 1000, 'the clock to pass the latest activity');
      const { sendMessage } = await gqlOk(b.url, SendMessageDocument, { input: { roomId: oldest.id, text: 'bump' } }, token);
      const after = (await gqlOk(a.url, AccRoomsPageDocument, { first: 10 }, token)).rooms.edges.map((e) => e.node);
      expect(after.map((r) => r.id)).toEqual([oldest.id, ...before.slice(0, -1).map((r) => r.id)]);
      expect(after[0]).toMatchObject({ lastMessage: { id: sendMessage.id, seq: 1 } });
      expect(Date.parse(after[0]!.lastActivityAt)).toBe(Date.parse(sendMessage.createdAt));
    });

    it('should walk every room exactly once with first/after, with hasNextPage right', async () => {
      const token = await tokenFor(uid('walker'));
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) ids.push((await create(i % 2 ? a : b, token, { name: `walk ${i}` })).id);
      let n = 0;
      const pages = await walkForward(async (after) => {
        const inst = n++ % 2 ? a : b;
        return (await gqlOk(inst.url, AccRoomsPageDocument, { first: 3, after }, token)).rooms;
      });
      expect(pages.map((p) => p.edges.length)).toEqual([3, 3, 2]);
      expect(pages.map((p) => p.pageInfo.hasNextPage)).toEqual([true, true, false]);
      expect(pages.map((p) => p.pageInfo.hasPreviousPage)).toEqual([false, true, true]);
      const walked = pages.flatMap((p) => p.edges.map((e) => e.node.id));
      expect(walked).toHaveLength(8);
      expect(new Set(walked).size).toBe(8);
      expect([...walked].sort()).toEqual([...ids].sort());
      const all = (await gqlOk(a.url, AccRoomsPageDocument, { first: 100 }, token)).rooms;
      expect(all.edges.map((e) => e.node.id)).toEqual(walked);
      expect(all.pageInfo).toMatchObject({ hasNextPage: false, hasPreviousPage: false });
    });

    it('should answer an empty list with no next page to a user with no rooms', async () => {
      const { rooms } = await gqlOk(a.url, AccRoomsPageDocument, {}, await tokenFor(uid('lonely')));
      expect(rooms).toEqual({
        edges: [],
        pageInfo: { hasNextPage: false, hasPreviousPage: false, startCursor: null, endCursor: null },
      });
    });

    it('should refuse first over 100 with BAD_USER_INPUT on field first', async () => {
      const r = await gql(a.url, AccRoomsPageDocument, { first: 101 }, { token: await tokenFor(uid('greedy')) });
      expectError(r, 'BAD_USER_INPUT', 'first');
    });

    it('should refuse a malformed cursor with BAD_USER_INPUT', async () => {
      const r = await gql(a.url, AccRoomsPageDocument, { first: 5, after: '%%%not-a-cursor' }, { token: await tokenFor(uid('bad')) });
      expectError(r, 'BAD_USER_INPUT');
    });
  });

  describe('when listing public rooms', () => {
    let tag: string;
    let publicIds: Map<string, string>;
    let privateId: string;
    let ownerToken: string;
    beforeAll(async () => {
      tag = randomBytes(4).toString('hex');
      ownerToken = await tokenFor(uid('curator'));
      publicIds = new Map();
      for (const name of ['Alpha', 'alpine', 'Beta', 'gamma', 'Delta', 'echo', 'Foxtrot']) {
        const room = await create(publicIds.size % 2 ? a : b, ownerToken, { name: `${tag} ${name}`, visibility: 'PUBLIC' });
        publicIds.set(room.name, room.id);
      }
      privateId = (await create(a, ownerToken, { name: `${tag} Alps private` })).id;
    });

    it('should keep the rooms whose name starts with the query, case-insensitively', async () => {
      const token = await tokenFor(uid('searcher'));
      for (const query of [`${tag} al`, `${tag} AL`.toUpperCase(), `${tag} aLp`]) {
        const { publicRooms } = await gqlOk(b.url, AccPublicRoomsPageDocument, { query }, token);
        expect(publicRooms.edges.map((e) => e.node.name), query).toEqual([`${tag} Alpha`, `${tag} alpine`]);
        expect(publicRooms.edges.every((e) => e.node.visibility === 'PUBLIC' && !e.node.viewerIsMember)).toBe(true);
      }
    });

    it('should never list a private room, not even to its members', async () => {
      const { publicRooms } = await gqlOk(a.url, AccPublicRoomsPageDocument, { query: tag, first: 100 }, ownerToken);
      const ids = publicRooms.edges.map((e) => e.node.id);
      expect(ids).not.toContain(privateId);
      expect(ids.sort()).toEqual([...publicIds.values()].sort());
    });

    it('should order rooms by name and walk them all exactly once with first/after', async () => {
      const token = await tokenFor(uid('browser'));
      let n = 0;
      const pages = await walkForward(async (after) => {
        const inst = n++ % 2 ? a : b;
        return (await gqlOk(inst.url, AccPublicRoomsPageDocument, { query: tag, first: 2, after }, token)).publicRooms;
      });
      expect(pages.map((p) => p.edges.length)).toEqual([2, 2, 2, 1]);
      expect(pages.map((p) => p.pageInfo.hasNextPage)).toEqual([true, true, true, false]);
      expect(pages.map((p) => p.pageInfo.hasPreviousPage)).toEqual([false, true, true, true]);
      const names = pages.flatMap((p) => p.edges.map((e) => e.node.name));
      const byName = [...publicIds.keys()].sort((x, y) => x.toLowerCase().localeCompare(y.toLowerCase()));
      expect(names).toEqual(byName);
    });

    it('should answer no rooms for a prefix nothing matches', async () => {
      const { publicRooms } = await gqlOk(a.url, AccPublicRoomsPageDocument, { query: `${tag} zzz` }, ownerToken);
      expect(publicRooms.edges).toEqual([]);
      expect(publicRooms.pageInfo.hasNextPage).toBe(false);
    });

    it('should refuse first over 100 with BAD_USER_INPUT on field first', async () => {
      const r = await gql(a.url, AccPublicRoomsPageDocument, { first: 101 }, { token: ownerToken });
      expectError(r, 'BAD_USER_INPUT', 'first');
    });
  });

  describe("when reading a room's members", () => {
    let roomId: string;
    let memberIds: string[];
    let token: string;
    beforeAll(async () => {
      const tag = uid('crowd');
      const owner = `${tag}-owner`;
      token = await tokenFor(owner);
      const others = Array.from({ length: 24 }, (_, i) => `${tag}-m${String(i).padStart(2, '0')}`);
      roomId = (await create(a, token, { name: 'crowd', memberIds: others })).id;
      memberIds = [owner, ...others];
    });

    it('should cover every member exactly once across pages, ordered by id', async () => {
      let n = 0;
      const pages = await walkForward(async (after) => {
        const inst = n++ % 2 ? a : b;
        const { room } = await gqlOk(inst.url, AccRoomMembersPageDocument, { id: roomId, first: 7, after }, token);
        expect(room?.memberCount).toBe(25);
        return room!.members;
      });
      expect(pages.map((p) => p.edges.length)).toEqual([7, 7, 7, 4]);
      expect(pages.map((p) => p.pageInfo.hasNextPage)).toEqual([true, true, true, false]);
      const ids = pages.flatMap((p) => p.edges.map((e) => e.node.id));
      expect(ids).toEqual([...memberIds].sort());
    });

    it('should give 20 members by default', async () => {
      const { room } = await gqlOk(b.url, AccRoomMembersPageDocument, { id: roomId }, token);
      expect(room?.members.edges).toHaveLength(20);
      expect(room?.members.pageInfo.hasNextPage).toBe(true);
    });

    it('should refuse first over 100 with BAD_USER_INPUT on field first', async () => {
      const r = await gql(a.url, AccRoomMembersPageDocument, { id: roomId, first: 101 }, { token });
      expectError(r, 'BAD_USER_INPUT', 'first');
    });
  });
});

// Switchboard demo chat: plain JavaScript, no build step, nothing loaded from elsewhere.
// DEVELOPMENT ONLY: the server offers this page and its sign-in only outside production.
//
// It runs the SDK's operations (src/sdk/operations/*.graphql) by name: /demo/operations.json maps
// each name to its text and its trusted-document hash, and every request sends both, so the page
// works whatever PERSISTED_OPERATIONS says. Live events come over WebSocket with a small
// graphql-transport-ws client (below) that resubscribes after a drop with `after` = the last
// message seen, so nothing is missed.

const $ = (id) => document.getElementById(id);
const SESSION_KEY = 'switchboard-demo-session';
/** setTyping(true) lasts a few seconds on the server: repeat it this often while typing. */
const TYPING_REPEAT_MS = 3000;
const HISTORY_PAGE = 50;

/** @type {Record<string, { hash: string, query: string }>} */
let operations = {};
/** @type {{ token: string, userId: string, name: string } | null} */
let session = null;
let socket = null;
/** The open room: its messages by seq, who is here, and how to stop listening. */
let room = null;
let errorTimer;

function showError(text) {
  $('error').textContent = text;
  $('error').hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => ($('error').hidden = true), 8000);
}

/** A GraphQL error as the app shows it: its contract code, then its message. */
const describe = (e) => `${e?.extensions?.code ?? 'ERROR'}: ${e?.message ?? String(e)}`;

/** The request body of SDK operation `name`: text, hash (trusted document) and variables. */
function operation(name, variables) {
  const op = operations[name];
  if (!op) throw new Error(`The SDK has no operation named ${name}`);
  return {
    operationName: name,
    query: op.query,
    variables,
    extensions: { persistedQuery: { version: 1, sha256Hash: op.hash } },
  };
}

/** Runs a query or mutation of the SDK over HTTP; throws the first GraphQL error. */
async function gql(name, variables = {}) {
  const res = await fetch('/graphql', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      accept: 'application/graphql-response+json, application/json',
      authorization: `Bearer ${session.token}`,
    },
    body: JSON.stringify(operation(name, variables)),
  });
  const body = await res.json();
  if (body.errors?.length) throw new Error(describe(body.errors[0]));
  return body.data;
}

/**
 * A graphql-transport-ws connection that reconnects with backoff. `subscribe` takes a function
 * making the payload, called at every (re)subscription so variables like `after` stay current.
 */
function connect(token) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/graphql`;
  const subscriptions = new Map();
  let ws;
  let acknowledged = false;
  let closing = false;
  let attempt = 0;
  let nextId = 1;
  const sendSubscribe = (id, sub) => ws.send(JSON.stringify({ id, type: 'subscribe', payload: sub.payload() }));

  function open() {
    acknowledged = false;
    ws = new WebSocket(url, 'graphql-transport-ws');
    ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } }));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      const sub = subscriptions.get(message.id);
      switch (message.type) {
        case 'connection_ack':
          acknowledged = true;
          attempt = 0;
          $('me').classList.remove('offline');
          for (const [id, s] of subscriptions) sendSubscribe(id, s);
          break;
        case 'ping':
          ws.send(JSON.stringify({ type: 'pong' }));
          break;
        case 'next':
          sub?.next(message.payload);
          break;
        case 'error':
          subscriptions.delete(message.id);
          sub?.error(message.payload);
          break;
        case 'complete':
          subscriptions.delete(message.id);
          sub?.complete();
          break;
      }
    };
    ws.onclose = (event) => {
      if (closing) return;
      $('me').classList.add('offline');
      if (event.code === 4403) return signOut('Your sign-in was refused: sign in again');
      // Dropped: come back with a growing pause; subscriptions resume where they were.
      setTimeout(open, Math.min(10_000, 300 * 2 ** attempt++));
    };
  }
  open();

  return {
    subscribe(payload, handlers) {
      const id = String(nextId++);
      const sub = { payload, ...handlers };
      subscriptions.set(id, sub);
      if (acknowledged) sendSubscribe(id, sub);
      return () => {
        if (subscriptions.delete(id) && acknowledged) ws.send(JSON.stringify({ id, type: 'complete' }));
      };
    },
    close() {
      closing = true;
      ws.close(1000, 'signed out');
    },
  };
}

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

async function refreshRooms() {
  const [{ rooms }, { publicRooms }] = await Promise.all([gql('Rooms', { first: 50 }), gql('PublicRooms', { first: 50 })]);
  $('rooms').replaceChildren(
    ...rooms.edges.map(({ node }) => {
      const item = el('li', { className: node.id === room?.id ? 'current' : '' }, el('button', { type: 'button', className: 'open', textContent: node.name, onclick: () => openRoom(node) }));
      item.dataset.roomId = node.id;
      return item;
    }),
  );
  $('public-rooms').replaceChildren(
    ...publicRooms.edges
      .filter(({ node }) => !node.viewerIsMember)
      .map(({ node }) => {
        const item = el(
          'li',
          {},
          el('span', { textContent: node.name }),
          el('button', { type: 'button', className: 'join', textContent: 'Join', onclick: () => joinRoom(node.id) }),
        );
        item.dataset.roomId = node.id;
        return item;
      }),
  );
}

async function joinRoom(roomId) {
  try {
    const { joinRoom: joined } = await gql('JoinRoom', { roomId });
    await refreshRooms();
    await openRoom(joined);
  } catch (err) {
    showError(err.message);
  }
}

function renderMessage(message) {
  const item = el(
    'li',
    { className: 'message' },
    el('span', { className: 'sender', textContent: message.sender.name }),
    el('span', { className: 'text', textContent: message.deleted ? '(deleted)' : message.text }),
    el('span', { className: 'time', textContent: new Date(message.createdAt).toLocaleTimeString() }),
  );
  item.dataset.seq = String(message.seq);
  return item;
}

/** Adds or replaces a message, keeping seq order; `lastId` is where a resubscription resumes. */
function putMessage(message) {
  const list = $('messages');
  const existing = list.querySelector(`[data-seq="${message.seq}"]`);
  if (existing) return existing.replaceWith(renderMessage(message));
  const after = [...list.children].find((li) => Number(li.dataset.seq) > message.seq);
  list.insertBefore(renderMessage(message), after ?? null);
  if (!room.lastSeq || message.seq > room.lastSeq) {
    room.lastSeq = message.seq;
    room.lastId = message.id;
    list.scrollTop = list.scrollHeight;
  }
}

function renderOnline() {
  $('online').replaceChildren(...[...room.online.values()].map((name) => el('span', { className: 'user', textContent: name })));
}

function renderTyping(users) {
  const others = users.filter((u) => u.id !== session.userId).map((u) => u.name);
  $('typing').textContent = others.length === 0 ? '' : `${others.join(', ')} ${others.length === 1 ? 'is' : 'are'} typing…`;
}

function onRoomEvent(result) {
  if (result.errors?.length) return showError(describe(result.errors[0]));
  const event = result.data?.roomEvents;
  switch (event?.__typename) {
    case 'MessageAdded':
    case 'MessageEdited':
    case 'MessageDeleted':
      return putMessage(event.message);
    case 'PresenceChanged':
      if (event.present) room.online.set(event.user.id, event.user.name);
      else room.online.delete(event.user.id);
      return renderOnline();
    case 'TypingChanged':
      return renderTyping(event.users);
    case 'MemberJoined':
    case 'MemberLeft':
      return refreshRooms().catch((err) => showError(err.message));
    default:
      // Event types this page does not know yet (the union grows): ignored, as the API asks.
      return undefined;
  }
}

async function openRoom(summary) {
  room?.stop();
  room = { id: summary.id, lastId: null, lastSeq: 0, online: new Map(), typingSentAt: 0, stop: () => undefined };
  const current = room;
  $('room-name').textContent = summary.name;
  $('messages').replaceChildren();
  $('typing').textContent = '';
  $('room').hidden = false;
  $('no-room').hidden = true;
  for (const li of $('rooms').children) li.classList.toggle('current', li.dataset.roomId === summary.id);
  try {
    const [{ messages }, { room: online }] = await Promise.all([
      gql('Messages', { roomId: summary.id, last: HISTORY_PAGE }),
      gql('RoomOnline', { roomId: summary.id }),
    ]);
    if (room !== current) return;
    for (const { node } of messages.edges) putMessage(node);
    for (const user of online?.onlineMembers ?? []) room.online.set(user.id, user.name);
    renderOnline();
    // After the last message of the history: no gap and no duplicate between the two, and after a
    // dropped connection the subscription resumes from the last message received.
    room.stop = socket.subscribe(() => operation('OnRoomEvents', { roomId: current.id, after: current.lastId }), {
      next: onRoomEvent,
      error: (errors) => showError(describe(Array.isArray(errors) ? errors[0] : errors)),
      complete: () => undefined,
    });
    $('composer').focus();
  } catch (err) {
    showError(err.message);
  }
}

function setTyping(typing) {
  const roomId = room.id;
  room.typingSentAt = typing ? Date.now() : 0;
  gql('SetTyping', { roomId, typing }).catch((err) => showError(err.message));
}

function start() {
  $('sign-in-form').hidden = true;
  $('chat').hidden = false;
  $('me').hidden = false;
  $('sign-out').hidden = false;
  $('me').textContent = `${session.name} (${session.userId})`;
  socket = connect(session.token);
  refreshRooms().catch((err) => showError(err.message));
}

function signOut(message) {
  room?.stop();
  room = null;
  socket?.close();
  socket = null;
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  $('chat').hidden = true;
  $('room').hidden = true;
  $('no-room').hidden = false;
  $('me').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in-form').hidden = false;
  if (message) showError(message);
}

$('sign-in-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const res = await fetch('/demo/token', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: $('name').value }),
  });
  const body = await res.json();
  if (!res.ok) return showError(body.error);
  session = body;
  await operationsLoaded;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  start();
});

$('sign-out').addEventListener('click', () => signOut());
$('refresh').addEventListener('click', () => refreshRooms().catch((err) => showError(err.message)));

$('new-room-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  try {
    const { createRoom } = await gql('CreateRoom', { input: { name: $('new-room').value, visibility: 'PUBLIC' } });
    $('new-room').value = '';
    await refreshRooms();
    await openRoom(createRoom);
  } catch (err) {
    showError(err.message);
  }
});

$('composer').addEventListener('input', () => {
  if (!room) return;
  const typing = $('composer').value.trim() !== '';
  if (typing && Date.now() - room.typingSentAt > TYPING_REPEAT_MS) setTyping(true);
  else if (!typing && room.typingSentAt) setTyping(false);
});

$('composer-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('composer').value;
  $('composer').value = '';
  // Sending clears the sender's typing on the server.
  room.typingSentAt = 0;
  const clientId = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
  try {
    const { sendMessage } = await gql('SendMessage', { input: { roomId: room.id, text, clientId } });
    putMessage(sendMessage);
  } catch (err) {
    $('composer').value = text;
    showError(err.message);
  }
});

const stored = sessionStorage.getItem(SESSION_KEY);
const operationsLoaded = fetch('/demo/operations.json').then((r) => r.json());
operationsLoaded
  .then((ops) => {
    operations = ops;
    document.body.dataset.ready = 'true';
    if (stored) {
      session = JSON.parse(stored);
      start();
    }
  })
  .catch((err) => showError(`Could not load the SDK operations: ${err.message}`));

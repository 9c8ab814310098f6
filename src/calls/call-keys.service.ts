import type { Redis } from 'ioredis';
import { badInput, forbidden, SCRIPT_STATUS } from '../errors.js';
import type { Clock } from '../infra/clock.js';
import { execPipeline } from '../infra/redis.js';
import type { ScriptRegistry } from '../infra/scripts.js';
import { checkedId } from '../infra/text.js';
import { roomKeys } from '../rooms/rooms.keys.js';
import type { AppPubSub } from '../topics.js';
import { userKeys } from '../users/users.keys.js';
import type { Viewer } from '../users/users.models.js';
import { callKeySignedText, decodeBase64, PUBLIC_KEY_BYTES, publicKeyObject, SIGNATURE_BYTES, verifyEd25519 } from './calls.crypto.js';
import { callKeys as keys, publishCallKeyKeys } from './calls.keys.js';
import { requireLiveKit, type LiveKit } from './calls.livekit.js';
import { CALL_STATUS, callScriptError, type CallKeyModel } from './calls.models.js';
import { pipelineOf } from '../infra/direct-pipeline.js';

/** Dependencies of {@link createCallKeysService}. */
export interface CallKeysServiceDeps {
  redis: Redis;
  scripts: ScriptRegistry;
  pubsub: AppPubSub;
  clock: Clock;
  livekit: LiveKit | null;
  /** How long a published key is served (CALL_KEY_TTL_SECONDS). */
  keyTtlSeconds: number;
}

/** Identity keys and the ephemeral media keys of calls: public keys only, signatures verified here. */
export type CallKeysService = ReturnType<typeof createCallKeysService>;

/** Input of `publishCallKey`. */
export interface PublishCallKeyInput {
  keyId: string;
  publicKey: string;
  signature: string;
}

const KEY_ID = /^[A-Za-z0-9._~-]{1,64}$/;

/** Creates the call keys service. The server stores and verifies public keys; it never sees a private one. */
export function createCallKeysService(deps: CallKeysServiceDeps) {
  const { redis, scripts, pubsub, clock, livekit, keyTtlSeconds } = deps;
  const publishScript = scripts.get('publishCallKey');
  const ttlMs = Math.round(keyTtlSeconds * 1000);

  /**
   * The viewer's view of a room's call, read in one transaction: whether they are a member and a
   * participant, the call's id and epoch, and what `extra` adds. `FORBIDDEN` unless a participant.
   */
  async function asParticipant(viewer: Viewer, roomId: string, extra: (tx: ReturnType<Redis['multi']>) => void) {
    const tx = redis
      .multi()
      .zscore(roomKeys.members(roomId), viewer.id)
      .hmget(keys.call(roomId), 'id', 'epoch')
      .hexists(keys.participants(roomId), viewer.id);
    extra(tx);
    const [member, [callId, epoch], participant, ...rest] = (await execPipeline(tx)) as [
      string | null,
      (string | null)[],
      number,
      ...unknown[],
    ];
    if (member === null) throw forbidden('You are not a member of this room');
    if (!callId || participant !== 1) throw callScriptError(callId ? CALL_STATUS.NOT_PARTICIPANT : CALL_STATUS.NO_CALL);
    return { callId, epoch: Number(epoch), rest };
  }

  return {
    /**
     * `registerIdentityKey`: stores the viewer's long-term Ed25519 public key. A new key is announced
     * in every room the viewer is a member of, and their call keys signed with the old one are
     * withdrawn (peers could not verify them any more).
     */
    async registerIdentityKey(viewer: Viewer, publicKey: string): Promise<boolean> {
      publicKeyObject('publicKey', decodeBase64('publicKey', publicKey, PUBLIC_KEY_BYTES), 'Ed25519');
      const previous = await redis.set(keys.identity(viewer.id), publicKey, 'GET');
      if (previous === publicKey) return true;
      const roomIds = await redis.smembers(userKeys.rooms(viewer.id));
      if (roomIds.length > 0) {
        const pipeline = pipelineOf(redis);
        for (const roomId of roomIds) pipeline.hdel(keys.mediaKeys(roomId), viewer.id);
        await execPipeline(pipeline);
      }
      for (const roomId of roomIds) {
        pubsub.publish('room', roomId, { type: 'IdentityKeyChanged', roomId, userId: viewer.id, publicKey });
      }
      return true;
    },

    /** Identity keys of users (null: none registered), in one round trip. */
    async identityKeys(userIds: readonly string[]): Promise<(string | null)[]> {
      if (userIds.length === 0) return [];
      const pipeline = pipelineOf(redis);
      for (const id of userIds) pipeline.get(keys.identity(id));
      return (await execPipeline(pipeline)) as (string | null)[];
    },

    /**
     * `publishCallKey`: a participant's X25519 public key for the call's current epoch, signed by
     * their identity key over `roomId|callId|epoch|keyId|publicKey`. Anything that does not verify
     * is refused with `BAD_USER_INPUT`. Served for CALL_KEY_TTL_SECONDS at most, and only while
     * the epoch lasts.
     */
    async publish(viewer: Viewer, roomIdArg: string, input: PublishCallKeyInput): Promise<CallKeyModel> {
      requireLiveKit(livekit);
      const roomId = checkedId('roomId', roomIdArg);
      if (!KEY_ID.test(input.keyId)) throw badInput('keyId', 'keyId must be 1..64 characters of A-Z a-z 0-9 . _ ~ -');
      publicKeyObject('publicKey', decodeBase64('publicKey', input.publicKey, PUBLIC_KEY_BYTES), 'X25519');
      const signature = decodeBase64('signature', input.signature, SIGNATURE_BYTES);
      const { callId, epoch, rest } = await asParticipant(viewer, roomId, (tx) => tx.get(keys.identity(viewer.id)));
      const identityKey = rest[0] as string | null;
      if (!identityKey) throw badInput('signature', 'Register an identity key (registerIdentityKey) before publishing call keys');
      const identity = publicKeyObject('signature', Buffer.from(identityKey, 'base64'), 'Ed25519');
      const text = callKeySignedText(roomId, callId, epoch, input.keyId, input.publicKey);
      if (!verifyEd25519(identity, text, signature)) {
        throw badInput('signature', `The signature does not verify with your identity key over roomId|callId|epoch|keyId|publicKey (epoch ${epoch})`);
      }
      const now = clock.now();
      const key: CallKeyModel = { roomId, callId, userId: viewer.id, ...input, epoch, expiresAt: now + ttlMs };
      const status = (await publishScript(publishCallKeyKeys(roomId), [
        viewer.id,
        callId,
        epoch,
        JSON.stringify(key),
        now,
        ttlMs,
      ])) as number;
      if (status === CALL_STATUS.STALE) {
        throw badInput('signature', 'The call ended or its epoch changed while publishing: sign again for the current epoch');
      }
      if (status !== SCRIPT_STATUS.OK) throw callScriptError(status);
      pubsub.publish('room', roomId, { type: 'CallKeyPublished', roomId, key });
      return key;
    },

    /** `callKeys`: the unexpired keys of the call's current epoch, ordered by user id; participants only. */
    async list(viewer: Viewer, roomIdArg: string): Promise<CallKeyModel[]> {
      requireLiveKit(livekit);
      const roomId = checkedId('roomId', roomIdArg);
      const { callId, epoch, rest } = await asParticipant(viewer, roomId, (tx) => tx.hgetall(keys.mediaKeys(roomId)));
      const now = clock.now();
      return Object.values(rest[0] as Record<string, string>)
        .map((json) => JSON.parse(json) as CallKeyModel)
        .filter((k) => k.callId === callId && k.epoch === epoch && k.expiresAt > now)
        .sort((a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0));
    },
  };
}

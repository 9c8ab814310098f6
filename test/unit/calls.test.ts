import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { callKeySignedText, decodeBase64, publicKeyObject, verifyEd25519 } from '../../src/calls/calls.crypto.js';
import { ConfigError, loadConfig } from '../../src/config.js';

/** Calls settings (all of LiveKit's or none, defaults) and the media key checks, without a server. */

const LIVEKIT = { LIVEKIT_URL: 'wss://lk.example.test', LIVEKIT_API_KEY: 'key', LIVEKIT_API_SECRET: 'secret' };

const problemsOf = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => p.split(':')[0]).sort();
    throw err;
  }
  return [];
};

describe('loadConfig for calls', () => {
  it('should leave LiveKit unconfigured without its variables, with the documented call defaults', () => {
    const c = loadConfig({});
    expect(c.livekit).toBeNull();
    expect(c.calls).toEqual({
      keyTtlSeconds: 7200,
      tokenTtlSeconds: 300,
      departureTimeoutMs: 20_000,
      rekeyWindowMs: 2000,
      joinGraceMs: 30_000,
      syncStaleMs: 5000,
      syncIntervalMs: 15_000,
      participantsCacheMs: 2000,
    });
  });

  it('should configure LiveKit when all three are set', () => {
    expect(loadConfig({ ...LIVEKIT, CALL_KEY_TTL_SECONDS: '60' })).toMatchObject({
      livekit: { url: LIVEKIT.LIVEKIT_URL, apiKey: 'key', apiSecret: 'secret', requestTimeoutMs: 3000 },
      calls: { keyTtlSeconds: 60 },
    });
  });

  it('should name each missing LiveKit variable when only some are set, with other bad values', () => {
    expect(problemsOf({ LIVEKIT_URL: LIVEKIT.LIVEKIT_URL, CALL_KEY_TTL_SECONDS: 'x' })).toEqual([
      'CALL_KEY_TTL_SECONDS',
      'LIVEKIT_API_KEY',
      'LIVEKIT_API_SECRET',
    ]);
    expect(problemsOf({ ...LIVEKIT, LIVEKIT_URL: 'ftp://lk.example.test' })).toEqual(['LIVEKIT_URL']);
  });
});

describe('media key checks', () => {
  const raw32 = Buffer.alloc(32, 7).toString('base64');

  it('should accept canonical base64 of the exact length only', () => {
    expect(decodeBase64('publicKey', raw32, 32)).toHaveLength(32);
    for (const bad of [raw32.replace('=', ''), `${raw32}=`, raw32.replace(/^./, '*'), Buffer.alloc(31).toString('base64'), '']) {
      expect(() => decodeBase64('publicKey', bad, 32), bad).toThrow(/publicKey must be the base64 of exactly 32 bytes/);
    }
    // The same bytes under another text (a non-zero padding bit) would be signed and compared differently.
    const lastBitSet = `${raw32.slice(0, 42)}x=`;
    expect(() => decodeBase64('publicKey', lastBitSet, 32)).toThrow();
  });

  it('should verify a signature over exactly roomId|callId|epoch|keyId|publicKey', () => {
    const { publicKey, privateKey } = generateKeyPairSync('ed25519');
    const identity = publicKeyObject('k', Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url'), 'Ed25519');
    const text = callKeySignedText('room', 'call', 3, 'k1', raw32);
    expect(text).toBe(`room|call|3|k1|${raw32}`);
    const signature = sign(null, Buffer.from(text), privateKey);
    expect(verifyEd25519(identity, text, signature)).toBe(true);
    expect(verifyEd25519(identity, callKeySignedText('room', 'call', 4, 'k1', raw32), signature)).toBe(false);
  });
});

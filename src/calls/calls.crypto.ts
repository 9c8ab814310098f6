import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { badInput } from '../errors.js';

/** Raw public keys are 32 bytes (Ed25519 identity keys, X25519 media keys); Ed25519 signatures 64. */
export const PUBLIC_KEY_BYTES = 32;
export const SIGNATURE_BYTES = 64;

/**
 * Decodes standard base64 of exactly `bytes` bytes, canonical only (one text per value, so what is
 * signed and stored is what clients compare); `BAD_USER_INPUT` naming `field` otherwise.
 */
export function decodeBase64(field: string, value: string, bytes: number): Buffer {
  const raw = /^[A-Za-z0-9+/]*={0,2}$/.test(value) ? Buffer.from(value, 'base64') : null;
  if (!raw || raw.length !== bytes || raw.toString('base64') !== value) {
    throw badInput(field, `${field} must be the base64 of exactly ${bytes} bytes`);
  }
  return raw;
}

/** A raw 32-byte public key of curve `crv` as a key object; `BAD_USER_INPUT` when it is not one. */
export function publicKeyObject(field: string, raw: Buffer, crv: 'Ed25519' | 'X25519'): KeyObject {
  try {
    return createPublicKey({ key: { kty: 'OKP', crv, x: raw.toString('base64url') }, format: 'jwk' });
  } catch {
    throw badInput(field, `${field} is not a valid ${crv} public key`);
  }
}

/** What a media key's signature covers: `roomId|callId|epoch|keyId|publicKey` (UTF-8). */
export const callKeySignedText = (roomId: string, callId: string, epoch: number, keyId: string, publicKey: string) =>
  `${roomId}|${callId}|${epoch}|${keyId}|${publicKey}`;

/** True when `signature` is the Ed25519 signature of `text` by `identityKey`. */
export const verifyEd25519 = (identityKey: KeyObject, text: string, signature: Buffer) =>
  verify(null, Buffer.from(text, 'utf8'), identityKey, signature);

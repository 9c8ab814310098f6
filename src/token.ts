import { loadConfig } from './config.js';
import { signToken } from './infra/auth.js';

/** `npm run token -- <userId> [displayName] [--admin]`: prints a JWT for the local server. */
async function main() {
  const args = process.argv.slice(2);
  const admin = args.includes('--admin');
  const [sub, ...nameParts] = args.filter((a) => a !== '--admin');
  if (!sub) {
    console.error('usage: npm run token -- <userId> [displayName] [--admin]');
    process.exit(2);
  }
  const config = loadConfig();
  if (!config.jwtSecret) {
    console.error('switchboard: JWT_SECRET is not set (tokens for JWKS setups come from your identity provider)');
    process.exit(1);
  }
  const name = nameParts.join(' ') || undefined;
  const token = await signToken(config.jwtSecret, {
    sub,
    ...(name ? { name } : {}),
    ...(admin ? { roles: ['admin'] } : {}),
  });
  process.stdout.write(`${token}\n`);
}

void main();

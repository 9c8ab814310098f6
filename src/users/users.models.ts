import type { Principal } from '../infra/auth.js';

/** A stored user. */
export interface UserModel {
  id: string;
  name: string;
  createdAt: number;
}

/** The authenticated caller, from the token. */
export type Viewer = Principal;

import type { Principal } from '../infra/auth.js';
import type { PresenceModel } from '../presence/presence.models.js';

/** A stored user. */
export interface UserModel {
  id: string;
  name: string;
  createdAt: number;
  /** Set when the user comes from a presence event, which carries the presence it announces. */
  presence?: PresenceModel;
}

/** The authenticated caller, from the token. */
export type Viewer = Principal;

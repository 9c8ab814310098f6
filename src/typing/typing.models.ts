/** The full list of users typing in a room, published on every change. */
export interface TypingChangedModel {
  type: 'TypingChanged';
  roomId: string;
  userIds: string[];
}

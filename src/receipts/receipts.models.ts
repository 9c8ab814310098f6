/** A read receipt as published on the room's channel (coalesced per user). */
export interface ReadReceiptModel {
  type: 'ReadReceipt';
  roomId: string;
  userId: string;
  seq: number;
  epoch: string;
  /** Private receipts reach only the reader's own subscriptions (their other devices). */
  private: boolean;
}

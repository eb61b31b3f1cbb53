// Wakes parked /sync requests after a change commits. In-process listeners; a Redis bus relays
// positions between processes that share a database.
import { EventEmitter } from 'node:events';
import type { StreamName } from '../storage/streams-store.js';

export interface StreamChange {
  stream: StreamName;
  position: number;
  /** Users who may see the change; absent when `roomIds` decides. */
  userIds?: string[];
  /** Rooms whose members may see the change. */
  roomIds?: string[];
  /** Cached events other processes must drop (their JSON changed, e.g. redacted). */
  invalidateEvents?: string[];
}

export interface NotifierBus {
  publish(change: StreamChange): void;
  onRemote(handler: (change: StreamChange) => void): void;
  close(): Promise<void>;
}

export class Notifier {
  private readonly emitter = new EventEmitter();
  private bus: NotifierBus | null = null;

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  attachBus(bus: NotifierBus): void {
    this.bus = bus;
    bus.onRemote((c) => this.emitter.emit('change', c));
  }

  /** Call after the change's transaction committed, never before. */
  notify(change: StreamChange): void {
    this.emitter.emit('change', change);
    this.bus?.publish(change);
  }

  subscribe(handler: (change: StreamChange) => void): () => void {
    this.emitter.on('change', handler);
    return () => this.emitter.off('change', handler);
  }
}

import type { Knex } from 'knex';

export type StreamName = 'events' | 'account_data' | 'receipts' | 'to_device' | 'presence' | 'device_lists' | 'push_rules' | 'typing' | 'invites';

export class StreamsStore {
  constructor(private readonly db: Knex) {}

  /**
   * Allocates the next position of a stream. Call it as the LAST statement of the writing
   * transaction: the row lock it takes is held until commit, so positions commit in order and a
   * reader that sees position N has every position below N committed too.
   */
  async nextPosition(trx: Knex, stream: StreamName): Promise<number> {
    const rows = await trx('stream_positions').where({ stream }).increment('position', 1).returning('position');
    const row = rows[0] as unknown as { position: number | string } | number;
    return Number(typeof row === 'object' ? row.position : row);
  }

  async currentPositions(q: Knex = this.db): Promise<Record<StreamName, number>> {
    const rows = await q('stream_positions').select('stream', 'position');
    const out = {} as Record<StreamName, number>;
    for (const r of rows as { stream: StreamName; position: number | string }[]) out[r.stream] = Number(r.position);
    return out;
  }
}

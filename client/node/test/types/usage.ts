// A TypeScript program using @sessionbroker/client as docs/clients.md shows
// it: `tsc --noEmit` (test/package.test.js) checks it against index.d.ts.
import {Broker, DatabaseError, Notification, NotificationGap, RowStream, Subscription, Transaction,
  grpcStatus, json, typed} from '../../index';

interface User {
  id: bigint;
  email: string;
  created: Date;
}

export async function main(): Promise<void> {
  const broker = new Broker({target: '127.0.0.1:50051', clientId: 'billing', int8: 'bigint',
    deadlineMs: 5000, pipeline: true});
  const {rows, fields, rowCount, command} = await broker.query<User>(
    'SELECT id, email, created FROM users WHERE id = $1', [42n]);
  const first: User | undefined = rows[0];
  const names: string[] = fields.map((f) => `${f.name}:${f.dataTypeID}:${f.dataTypeName}`);
  const count: number | null = rowCount;
  const tag: string | null = command;

  const arrays = await broker.query({text: 'SELECT 1, 2', rowMode: 'array'});
  const cell: unknown = arrays.rows[0][1];

  await broker.query('INSERT INTO events (id, at, payload, tags) VALUES ($1, $2, $3, $4)',
    [typed('a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'uuid'), new Date(), {kind: 'opened'},
      json(['a', 'b'])], {signal: AbortSignal.timeout(1000), types: [null, 'timestamptz']});

  const total = await broker.transaction(async (tx: Transaction) => {
    await tx.query('UPDATE accounts SET balance = balance - $1 WHERE id = $2', [10, 1]);
    const r = await tx.query<{balance: string}>('SELECT balance FROM accounts WHERE id = $1', [1]);
    return {balance: r.rows[0].balance, attempt: tx.attempt};
  }, {isolation: 'serializable', maxAttempts: 3});
  const balance: string = total.balance;

  const session = await broker.session({ttlMs: 30000, label: 'worker',
    settings: {search_path: 'app'}, requestId: 'worker-7c1d'});
  try {
    await session.begin({readOnly: true});
    await session.query('SELECT 1');
    const rolledBack: boolean = await session.rollback();
    const held: boolean = (await session.info()).heldByStream;
    void rolledBack;
    void held;
  } finally {
    await session.end();
  }

  try {
    await broker.query('INSERT INTO users (email) VALUES ($1)', ['a@example.com']);
  } catch (e) {
    if (e instanceof DatabaseError && e.code === '23505') {
      const c: string | undefined = e.constraint;
      const g: boolean = e.grpcCode === grpcStatus.ALREADY_EXISTS && e.retryable;
      void c;
      void g;
    }
  }
  const rowStream: RowStream<{n: number}> = broker.stream<{n: number}>(
    'SELECT generate_series(1, $1::int4) AS n', [1000], {highWaterMark: 50});
  rowStream.on('fields', (f) => void f.map((x) => x.dataTypeName));
  let sum = 0;
  for await (const row of rowStream) sum += row.n;
  const streamed: number | null = rowStream.rowCount;
  const inSession = (await broker.session()).stream({text: 'SELECT 1', rowMode: 'array'});
  inSession.destroy();

  const sub: Subscription = await broker.listen(['orders'], {signal: AbortSignal.timeout(1000)});
  sub.on('notification', (msg: Notification) => {
    const text: string = `${msg.channel}:${msg.payload}:${msg.processId}`;
    void text;
  });
  sub.on('gap', (gap: NotificationGap) => void gap.reason);
  sub.on('error', (err: DatabaseError) => void err.grpcCode);
  await sub.close();

  await broker.close();
  void [first, names, count, tag, cell, balance, sum, streamed];
}

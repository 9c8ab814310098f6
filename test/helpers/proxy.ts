import { connect, createServer, type Socket } from 'node:net';

/** A TCP proxy in front of an instance whose connections a test can drop, like a flaky network. */
export interface TcpProxy {
  /** ws://127.0.0.1:<proxy port>/graphql */
  wsUrl: string;
  /** Cuts every open connection and refuses new ones until `restore`. */
  cut(): void;
  /** Accepts connections again. */
  restore(): void;
  close(): Promise<void>;
}

/** Starts a proxy on a free port forwarding to `127.0.0.1:targetPort`. */
export async function startProxy(targetPort: number): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let refusing = false;
  const server = createServer((client) => {
    if (refusing) return void client.destroy();
    const upstream = connect(targetPort, '127.0.0.1');
    const pair = [client, upstream];
    const drop = () => pair.forEach((s) => (s.destroy(), sockets.delete(s)));
    for (const s of pair) {
      sockets.add(s);
      s.on('error', drop).on('close', drop);
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return {
    wsUrl: `ws://127.0.0.1:${port}/graphql`,
    cut() {
      refusing = true;
      sockets.forEach((s) => s.destroy());
    },
    restore() {
      refusing = false;
    },
    close() {
      sockets.forEach((s) => s.destroy());
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

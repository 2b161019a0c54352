// The language client, less its own toast when the server cannot start: the extension shows one
// error for that cause, with the fix (install it, or set aiLsp.server.command and where).

type ShowNotification = boolean | 'force';

/** What we change on the language client (kept small so tests can fake it). */
export interface StartingClient {
  start(): Promise<void>;
  error(message: string, data?: unknown, showNotification?: ShowNotification): void;
}

/** While `start()` runs, the client's errors go to its output channel only, not to a toast. */
export function quietWhileStarting<T extends StartingClient>(client: T): T {
  let startingUp = false;
  const start = client.start.bind(client);
  const error = client.error.bind(client);
  client.start = async () => {
    startingUp = true;
    try {
      await start();
    } finally {
      startingUp = false;
    }
  };
  client.error = (message, data, showNotification = true) =>
    error(message, data, startingUp ? false : showNotification);
  return client;
}

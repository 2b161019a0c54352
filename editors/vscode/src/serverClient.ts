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

/** A line of the server's stderr as the output channel should log it. */
export interface LogLine {
  level: 'debug' | 'info' | 'warn' | 'error';
  text: string;
}

// ai_lsp_tune/server/logs.py: "%(asctime)s %(name)s %(levelname)s %(message)s"
const SERVER_LOG_LINE = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (\S+) (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$/;
const LEVELS: Record<string, LogLine['level']> = {
  DEBUG: 'debug', INFO: 'info', WARNING: 'warn', ERROR: 'error', CRITICAL: 'error',
};

/** The server's stderr logs at its own level, without its timestamp (the channel adds one): the
 * client's default logs every stderr line as an error. A line that is no log record (a
 * traceback's lines, a launcher's note) takes the level of the record before it. */
export function stderrLogLine(line: string, previous: LogLine['level']): LogLine {
  const record = SERVER_LOG_LINE.exec(line);
  if (record) {
    return { level: LEVELS[record[2]], text: `${record[1]}: ${record[3]}` };
  }
  return { level: line.startsWith('Traceback ') ? 'error' : previous, text: line };
}

/** Where a logged line goes (a LogOutputChannel's level methods). */
export type LevelLog = Record<LogLine['level'], (text: string) => void>;

/** `stdioOptions.stderr` for the language client: each line at its level. */
export function logStderr(input: NodeJS.ReadableStream, output: LevelLog): void {
  let level: LogLine['level'] = 'info';
  let rest = '';
  input.setEncoding('utf8');  // a character split between chunks stays whole
  input.on('data', (chunk: Buffer | string) => {
    const lines = (rest + chunk.toString()).split(/\r?\n/);
    rest = lines.pop() ?? '';
    for (const line of lines.filter((l) => l.trim())) {
      const logged = stderrLogLine(line, level);
      level = logged.level;
      output[level](logged.text);
    }
  });
}

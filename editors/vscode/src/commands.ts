// Palette commands: each forwards to the server's `workspace/executeCommand`; all logic is there.

/** Server command ids (ai_lsp_tune/server/commands.py). */
export const ServerCommand = {
  finetune: 'ai-lsp.finetune',
  cancel: 'ai-lsp.finetune.cancel',
  status: 'ai-lsp.finetune.status',
  use: 'ai-lsp.model.use',
  rollback: 'ai-lsp.model.rollback',
  dismiss: 'ai-lsp.dismiss',
} as const;

/** Palette command (package.json `contributes.commands`) -> the server command it forwards to. */
export const PALETTE: Record<string, string> = {
  'aiLsp.finetune': ServerCommand.finetune,
  'aiLsp.finetuneCancel': ServerCommand.cancel,
  'aiLsp.rollback': ServerCommand.rollback,
  'aiLsp.status': ServerCommand.status,
};

/** What the forwarder needs from the language client (kept small so tests can fake it). */
export interface CommandTarget {
  /** Commands the server advertised in `executeCommandProvider`, or undefined when not running. */
  advertisedCommands(): string[] | undefined;
  executeCommand(command: string, args: unknown[]): Promise<unknown>;
}

/** What the forwarder needs from the UI. */
export interface Notifier {
  info(message: string): void;
  error(message: string): void;
}

/** Run a server command and tell the user what came of it; never throws. */
export async function forward(
  target: CommandTarget,
  notifier: Notifier,
  command: string,
  args: unknown[] = [],
): Promise<unknown> {
  const advertised = target.advertisedCommands();
  if (advertised === undefined) {
    notifier.error(
      'AI LSP: the language server is not running. Check the "AI LSP" output channel and the ' +
        'aiLsp.server.command setting.',
    );
    return undefined;
  }
  if (!advertised.includes(command)) {
    notifier.error(`AI LSP: the server does not offer "${command}"; update ai-lsp-tune.`);
    return undefined;
  }
  try {
    const result = await target.executeCommand(command, args);
    const text = describeResult(result);
    if (text) {
      notifier.info(`AI LSP: ${text}`);
    }
    return result;
  } catch (err) {
    notifier.error(`AI LSP: ${errorMessage(err)}`);
    return undefined;
  }
}

/** One line a person can read from a command's JSON answer. */
export function describeResult(result: unknown): string | undefined {
  if (result === null || result === undefined) {
    return undefined;
  }
  if (typeof result !== 'object') {
    return String(result);
  }
  const record = result as Record<string, unknown>;
  if (typeof record.message === 'string') {
    return record.message;
  }
  const keys = ['state', 'phase', 'runId', 'servedModel', 'previousModel'];
  const progress = record.progress as { message?: unknown } | null | undefined;
  const lead = progress && typeof progress.message === 'string' ? [progress.message] : [];
  const parts = lead.concat(keys
    .filter((k) => record[k] !== undefined && record[k] !== null)
    .map((k) => `${k}: ${typeof record[k] === 'object' ? JSON.stringify(record[k]) : String(record[k])}`));
  return parts.length > 0 ? parts.join(' · ') : JSON.stringify(result);
}

/** The message of an LSP ResponseError or any thrown value. */
export function errorMessage(err: unknown): string {
  if (err && typeof err === 'object' && 'message' in err) {
    return String((err as { message: unknown }).message);
  }
  return String(err);
}

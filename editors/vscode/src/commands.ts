// Palette commands: each forwards to the server's `workspace/executeCommand`; all logic is there.

/** Server command ids (ai_lsp_tune/server/commands.py). */
export const ServerCommand = {
  finetune: 'ai-lsp.finetune',
  cancel: 'ai-lsp.finetune.cancel',
  status: 'ai-lsp.finetune.status',
  list: 'ai-lsp.model.list',
  use: 'ai-lsp.model.use',
  rollback: 'ai-lsp.model.rollback',
  export: 'ai-lsp.model.export',
  dismiss: 'ai-lsp.dismiss',
} as const;

/** Palette command (package.json `contributes.commands`) -> the server command it forwards to. */
export const PALETTE: Record<string, string> = {
  'aiLsp.finetune': ServerCommand.finetune,
  'aiLsp.finetuneCancel': ServerCommand.cancel,
  'aiLsp.rollback': ServerCommand.rollback,
  'aiLsp.status': ServerCommand.status,
  'aiLsp.export': ServerCommand.export,
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

/** The short line the server put in a command's answer (`message`); fields are not dumped. */
export function describeResult(result: unknown): string | undefined {
  if (typeof result === 'string') {
    return result;
  }
  if (result && typeof result === 'object') {
    const message = (result as Record<string, unknown>).message;
    if (typeof message === 'string') {
      return message;
    }
  }
  return undefined;
}

/** A row of `ai-lsp.model.list`: the server writes what a picker shows (`label`, `detail`). */
export interface ModelRow {
  path: string;
  label?: string;
  detail?: string;
  serving?: boolean;
}

/** A quick-pick item for a model row. */
export interface ModelItem {
  label: string;
  description?: string;
  detail?: string;
  path: string;
  serving: boolean;
}

/** Quick-pick items for the model list: the server's name and detail line, the served one marked. */
export function modelItems(result: unknown): ModelItem[] {
  const models = (result as { models?: ModelRow[] } | undefined)?.models ?? [];
  return models.map((model) => ({
    label: `${model.serving ? '$(check) ' : ''}${model.label ?? model.path}`,
    description: model.serving ? 'serving' : undefined,
    detail: model.detail || undefined,
    path: model.path,
    serving: model.serving === true,
  }));
}

/** The message of an LSP ResponseError or any thrown value. */
export function errorMessage(err: unknown): string {
  if (err && typeof err === 'object' && 'message' in err) {
    return String((err as { message: unknown }).message);
  }
  return String(err);
}

// Typed server settings, read from the `aiLsp.*` configuration; camelCase as on the wire.
// Names and defaults mirror ai_lsp_tune/server/settings.py (Settings, FinetuneSettings).

/** Server settings (ai_lsp_tune/server/settings.py Settings) the extension forwards when the user sets them. */
export const SERVER_SETTINGS = [
  'backend', 'model', 'remoteModel', 'debounceMs', 'maxTokens', 'maxInputTokens',
  'constrainedDecoding', 'maxDocumentBytes', 'languages', 'telemetry', 'traceFile',
] as const;

/** `aiLsp.finetune.*` (ai_lsp_tune/server/settings.py FinetuneSettings). */
export const FINETUNE_SETTINGS = [
  'baseModel', 'continueFromServed', 'extraTraces', 'numEpochs', 'batchSize', 'learningRate',
  'maxSeqLength', 'loraRank', 'numLayers', 'force', 'minTestExamples', 'keepModels', 'hosts',
  'hostfile', 'backend', 'gradCheckpoint', 'seed', 'includeLocalAnswers', 'maxBatchTokens',
  'fuse',
] as const;

/** What goes to the server: only what the user set; the server holds every default, so an
 * environment variable (AI_LSP_MODEL, ...) works the same as under Neovim. */
export type ServerSettings = Record<string, unknown> & { finetune?: Record<string, unknown> };

/** Where VS Code found a setting (`WorkspaceConfiguration.inspect`), as far as we read it. */
export interface Inspected {
  globalValue?: unknown;
  workspaceValue?: unknown;
  workspaceFolderValue?: unknown;
}

/** The subset of `vscode.WorkspaceConfiguration` we read (kept small so tests can fake it). */
export interface ConfigurationReader {
  get<T>(section: string, defaultValue: T): T;
  inspect?(section: string): Inspected | undefined;
}

export const DEFAULT_SERVER_COMMAND = ['ai-lsp', 'serve'];

/** Languages analysed when `aiLsp.languages` is empty: code, not prose or data files. */
export const DEFAULT_LANGUAGES = [
  'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
  'lua', 'c', 'cpp', 'java', 'ruby', 'php', 'shellscript', 'swift', 'kotlin', 'csharp',
];

/** Settings sent to the server as `initializationOptions` and on every change: user-set only.
 * With `resets` (a change), every other setting goes as `null`: one the user set back to its
 * default (the Settings UI deletes the key) returns to the server's default, not to the value
 * the server started with. */
export function readServerSettings(
  config: ConfigurationReader,
  { resets = false }: { resets?: boolean } = {},
): ServerSettings {
  const settings: ServerSettings = {};
  for (const key of SERVER_SETTINGS) {
    if (userSet(config, key)) {
      settings[key] = blankToNull(config.get<unknown>(key, undefined));
    } else if (resets) {
      settings[key] = null;
    }
  }
  const finetune: Record<string, unknown> = {};
  for (const key of FINETUNE_SETTINGS) {
    if (userSet(config, `finetune.${key}`)) {
      finetune[key] = blankToNull(config.get<unknown>(`finetune.${key}`, undefined));
    } else if (resets) {
      finetune[key] = null;
    }
  }
  if (Object.keys(finetune).length > 0) {
    settings.finetune = finetune;
  }
  return settings;
}

function userSet(config: ConfigurationReader, section: string): boolean {
  const seen = config.inspect?.(section);
  return seen !== undefined &&
    [seen.globalValue, seen.workspaceValue, seen.workspaceFolderValue].some((v) => v !== undefined);
}

/** The server command line; a clear error when the setting is unusable. */
export function readServerCommand(config: ConfigurationReader): { command: string; args: string[] } {
  const argv = config.get<string[]>('server.command', DEFAULT_SERVER_COMMAND);
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string' || !a)) {
    throw new Error(
      'aiLsp.server.command must be a non-empty list of strings, e.g. ["ai-lsp", "serve"] ' +
        'or ["uvx", "--from", "/path/to/ai-lsp-tune", "ai-lsp", "serve"].',
    );
  }
  return { command: argv[0], args: argv.slice(1) };
}

/** Language ids the client attaches to. */
export function documentLanguages(settings: ServerSettings): string[] {
  const languages = settings.languages;
  return Array.isArray(languages) && languages.length > 0 ? (languages as string[]) : DEFAULT_LANGUAGES;
}

function blankToNull(value: unknown): unknown {
  return typeof value === 'string' && value.trim() === '' ? null : value;
}

/** Settings a running server cannot take over `workspace/didChangeConfiguration`: the process
 * command, and the languages the client attaches to. Everything else (aiLsp.backend, the model,
 * fine-tune settings) the server applies in place. A server that is not running restarts. */
export const RESTART_SECTIONS = ['aiLsp.server.command', 'aiLsp.languages'];

export function restartNeeded(affects: (section: string) => boolean, running: boolean): boolean {
  return !running || RESTART_SECTIONS.some((section) => affects(section));
}

// Typed server settings, read from the `aiLsp.*` configuration; camelCase as on the wire.
// Names and defaults mirror ai_lsp_tune/config.py (Settings, FinetuneSettings).

export interface FinetuneSettings {
  baseModel: string | null;
  extraTraces: string[];
  numEpochs: number;
  batchSize: number;
  learningRate: number;
  maxSeqLength: number;
  loraRank: number;
  numLayers: number;
  force: boolean;
  hosts: string[];
  hostfile: string | null;
  backend: 'ring' | 'mpi' | 'nccl' | null;
}

export interface ServerSettings {
  backend: 'local' | 'remote';
  model: string;
  remoteModel: string;
  debounceMs: number;
  maxTokens: number;
  maxInputTokens: number | null;
  constrainedDecoding: boolean;
  maxDocumentBytes: number;
  languages: string[];
  telemetry: boolean;
  traceFile: string | null;
  finetune: FinetuneSettings;
}

/** The subset of `vscode.WorkspaceConfiguration` we read (kept small so tests can fake it). */
export interface ConfigurationReader {
  get<T>(section: string, defaultValue: T): T;
}

export const DEFAULT_SERVER_COMMAND = ['ai-lsp', 'serve'];

/** Languages analysed when `aiLsp.languages` is empty: code, not prose or data files. */
export const DEFAULT_LANGUAGES = [
  'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact', 'go', 'rust',
  'lua', 'c', 'cpp', 'java', 'ruby', 'php', 'shellscript', 'swift', 'kotlin', 'csharp',
];

/** Settings sent to the server as `initializationOptions` and on every change. */
export function readServerSettings(config: ConfigurationReader): ServerSettings {
  return {
    backend: config.get<'local' | 'remote'>('backend', 'local'),
    model: config.get('model', 'mlx-community/gemma-2-2b-it-4bit'),
    remoteModel: config.get('remoteModel', 'google:gemini-2.5-flash'),
    debounceMs: config.get('debounceMs', 1000),
    maxTokens: config.get('maxTokens', 1024),
    maxInputTokens: config.get<number | null>('maxInputTokens', null),
    constrainedDecoding: config.get('constrainedDecoding', true),
    maxDocumentBytes: config.get('maxDocumentBytes', 1000000),
    languages: config.get<string[]>('languages', []),
    telemetry: config.get('telemetry', true),
    traceFile: emptyToNull(config.get<string | null>('traceFile', null)),
    finetune: {
      baseModel: emptyToNull(config.get<string | null>('finetune.baseModel', null)),
      extraTraces: config.get<string[]>('finetune.extraTraces', []),
      numEpochs: config.get('finetune.numEpochs', 3),
      batchSize: config.get('finetune.batchSize', 2),
      learningRate: config.get('finetune.learningRate', 1e-5),
      maxSeqLength: config.get('finetune.maxSeqLength', 2048),
      loraRank: config.get('finetune.loraRank', 8),
      numLayers: config.get('finetune.numLayers', 16),
      force: config.get('finetune.force', false),
      hosts: config.get<string[]>('finetune.hosts', []),
      hostfile: emptyToNull(config.get<string | null>('finetune.hostfile', null)),
      backend: config.get<'ring' | 'mpi' | 'nccl' | null>('finetune.backend', null),
    },
  };
}

/** The server command line; a clear error when the setting is unusable. */
export function readServerCommand(config: ConfigurationReader): { command: string; args: string[] } {
  const argv = config.get<string[]>('server.command', DEFAULT_SERVER_COMMAND);
  if (!Array.isArray(argv) || argv.length === 0 || argv.some((a) => typeof a !== 'string' || !a)) {
    throw new Error(
      'aiLsp.server.command must be a non-empty list of strings, e.g. ["ai-lsp", "serve"] ' +
        'or ["uvx", "--from", "ai-lsp-tune", "ai-lsp", "serve"].',
    );
  }
  return { command: argv[0], args: argv.slice(1) };
}

/** Language ids the client attaches to. */
export function documentLanguages(settings: ServerSettings): string[] {
  return settings.languages.length > 0 ? settings.languages : DEFAULT_LANGUAGES;
}

function emptyToNull(value: string | null | undefined): string | null {
  return value === undefined || value === null || value.trim() === '' ? null : value;
}

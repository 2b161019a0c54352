// A small stand-in for the `vscode` module (only in unit tests: the API exists only inside
// VS Code). It records what the extension asks of the UI so tests can assert on it.
import Module = require('node:module');

export interface Recorded {
  infos: string[];
  errors: string[];
  withProgress: { options: { location: number; title?: string; cancellable?: boolean }; reports: { message?: string; increment?: number }[]; cancel: () => void; done: Promise<unknown> }[];
  commands: Map<string, (...args: unknown[]) => unknown>;
  statusBar: { text: string; tooltip: string; command?: string; shown: boolean };
  warnings: { message: string; rest: unknown[] }[];
  /** What the next warning answers (the item the user picks). */
  pick?: (items: unknown[]) => unknown;
}

export const recorded: Recorded = {
  infos: [],
  errors: [],
  withProgress: [],
  commands: new Map(),
  statusBar: { text: '', tooltip: '', shown: false },
  warnings: [],
};

export function reset(): void {
  recorded.infos.length = 0;
  recorded.errors.length = 0;
  recorded.withProgress.length = 0;
  recorded.commands.clear();
  recorded.warnings.length = 0;
  recorded.pick = undefined;
}

const ProgressLocation = { SourceControl: 1, Window: 10, Notification: 15 };

export const vscodeMock = {
  ProgressLocation,
  StatusBarAlignment: { Left: 1, Right: 2 },
  window: {
    showInformationMessage: async (message: string) => {
      recorded.infos.push(message);
      return undefined;
    },
    showWarningMessage: async (message: string, ...rest: unknown[]) => {
      recorded.warnings.push({ message, rest });
      return recorded.pick?.(rest);
    },
    showErrorMessage: async (message: string) => {
      recorded.errors.push(message);
      return undefined;
    },
    createStatusBarItem: () => ({
      get text() { return recorded.statusBar.text; },
      set text(v: string) { recorded.statusBar.text = v; },
      get tooltip() { return recorded.statusBar.tooltip; },
      set tooltip(v: string) { recorded.statusBar.tooltip = v; },
      set command(v: string) { recorded.statusBar.command = v; },
      name: '',
      show: () => { recorded.statusBar.shown = true; },
      dispose: () => undefined,
    }),
    withProgress: (
      options: { location: number; title?: string; cancellable?: boolean },
      task: (progress: unknown, token: unknown) => Promise<unknown>,
    ) => {
      const listeners: (() => void)[] = [];
      const entry = {
        options,
        reports: [] as { message?: string; increment?: number }[],
        cancel: () => listeners.forEach((l) => l()),
        done: Promise.resolve() as Promise<unknown>,
      };
      recorded.withProgress.push(entry);
      entry.done = task(
        { report: (value: { message?: string; increment?: number }) => entry.reports.push(value) },
        { onCancellationRequested: (listener: () => void) => listeners.push(listener) },
      );
      return entry.done;
    },
  },
  commands: {
    registerCommand: (id: string, fn: (...args: unknown[]) => unknown) => {
      recorded.commands.set(id, fn);
      return { dispose: () => recorded.commands.delete(id) };
    },
  },
};

/** Make `require('vscode')` return the mock, for every module loaded after this call. */
export function installVscodeMock(): void {
  const moduleWithLoad = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
  const originalLoad = moduleWithLoad._load;
  moduleWithLoad._load = function (request: string, ...rest: unknown[]) {
    if (request === 'vscode') {
      return vscodeMock;
    }
    return originalLoad.call(this, request, ...rest);
  };
}

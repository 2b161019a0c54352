// Entry point: start the server, wire the palette commands, settings and progress.
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  MessageType,
  ServerOptions,
  State,
} from 'vscode-languageclient/node';

import {
  forward,
  modelItems,
  PALETTE,
  ServerCommand,
  type CommandTarget,
  type ModelItem,
  type Notifier,
} from './commands';
import { messageFeature, type SettingsActions, toast } from './messages';
import { WorkDoneProgressUi } from './progressUi';
import { logStderr, quietWhileStarting } from './serverClient';
import { documentLanguages, readServerCommand, readServerSettings, restartNeeded } from './settings';
import type { ListedModel, ServerStatus } from './stateView';
import { ServerStateUi } from './statusItems';

const SECTION = 'aiLsp';
let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('AI LSP', { log: true });
  const statusBar = vscode.window.createStatusBarItem('aiLsp.progress', vscode.StatusBarAlignment.Left, 50);
  statusBar.name = 'AI LSP';
  statusBar.command = 'aiLsp.status';
  const stateUi = new ServerStateUi(statusBar, serverState, documentLanguages(readServerSettings(config())));
  const progressUi = new WorkDoneProgressUi(statusBar, (view) => stateUi.onProgress(view));
  context.subscriptions.push(output, statusBar, stateUi, progressUi);
  const settings = settingsActions(context);

  const notifier: Notifier = {
    info: (message) => void toast(MessageType.Info, message, settings),
    error: (message) => {
      output.error(message);
      void toast(MessageType.Error, message, settings, ['Show log']).then((choice) => {
        if (choice) {
          output.show();
        }
      });
    },
  };
  const ui: Ui = { output, progressUi, stateUi, notifier, settings };
  const target: CommandTarget = {
    advertisedCommands: () =>
      client?.state === State.Running
        ? (client.initializeResult?.capabilities.executeCommandProvider?.commands ?? [])
        : undefined,
    executeCommand: (command, args) =>
      client!.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }),
  };

  for (const [paletteId, serverCommand] of Object.entries(PALETTE)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(paletteId, async (...args: unknown[]) => {
        const result = await forward(target, notifier, serverCommand, args);
        void stateUi.refresh();
        return result;
      }),
    );
  }
  context.subscriptions.push(
    vscode.commands.registerCommand('aiLsp.restart', () => restartSaying(ui)),
    vscode.commands.registerCommand('aiLsp.models', async () => {
      const quiet: Notifier = { info: () => undefined, error: notifier.error };
      const listed = await forward(target, quiet, ServerCommand.list);
      if (listed === undefined) {
        return;
      }
      const choice = await pickModel(modelItems(listed));
      if (choice && !choice.serving) {
        await forward(target, notifier, ServerCommand.use, [choice.path]);
        void stateUi.refresh();
      }
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      if (restartNeeded((section) => event.affectsConfiguration(section), client?.state === State.Running)) {
        await restart(ui);
      } else if (client?.state === State.Running) {
        const changed = readServerSettings(config(), { resets: true });
        await client.sendNotification('workspace/didChangeConfiguration', { settings: changed });
        void stateUi.refresh();
      }
    }),
  );
  statusBar.show();
  await restart(ui);
}

const config = (): vscode.WorkspaceConfiguration => vscode.workspace.getConfiguration(SECTION);

/** What the status items show: the server's status and model list (quiet: no toasts). */
async function serverState(): Promise<{ status: ServerStatus; models?: ListedModel[] } | undefined> {
  const running = client;
  if (running?.state !== State.Running) {
    return undefined;
  }
  const run = (command: string): Promise<unknown> =>
    running.sendRequest(ExecuteCommandRequest.type, { command, arguments: [] });
  const status = (await run(ServerCommand.status)) as ServerStatus;
  const listed = status.backend === 'remote' ? undefined : ((await run(ServerCommand.list)) as { models?: ListedModel[] });
  return { status, models: listed?.models };
}

/** The settings a message can name, and the two things its actions do with them. */
function settingsActions(context: vscode.ExtensionContext): SettingsActions {
  const categories = (context.extension.packageJSON as {
    contributes: { configuration: { properties: Record<string, unknown> }[] };
  }).contributes.configuration;
  return {
    known: new Set(categories.flatMap((category) => Object.keys(category.properties))),
    backend: () => config().get<string>('backend'),
    openSettings: (id) => void vscode.commands.executeCommand('workbench.action.openSettings', `@id:${id}`),
    switchToLocal: () => {
      // Where the user set "remote" (a workspace's setting wins over the user's)
      const seen = config().inspect<string>('backend');
      const target = seen?.workspaceFolderValue !== undefined
        ? vscode.ConfigurationTarget.WorkspaceFolder
        : seen?.workspaceValue !== undefined
          ? vscode.ConfigurationTarget.Workspace
          : vscode.ConfigurationTarget.Global;
      void config().update('backend', 'local', target);
    },
  };
}

interface Ui {
  output: vscode.LogOutputChannel;
  progressUi: WorkDoneProgressUi;
  stateUi: ServerStateUi;
  notifier: Notifier;
  settings: SettingsActions;
}

/** "Restart server" from the palette: progress while it restarts, then a line that it is back. */
async function restartSaying(ui: Ui): Promise<void> {
  await vscode.window.withProgress(
    { location: vscode.ProgressLocation.Window, title: 'AI LSP: restarting the server' },
    () => restart(ui),
  );
  if (client?.state === State.Running) {
    ui.notifier.info('AI LSP: server restarted');  // the status item shows its model once loaded
  }
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}

let restarting: Promise<void> = Promise.resolve();

/** (Re)start the server with the current settings, one restart at a time. */
function restart(ui: Ui): Promise<void> {
  restarting = restarting.then(() => startServer(ui));
  return restarting;
}

/** Settings can reach a remote window's extension host after activation (code-server,
 * microsoft/vscode#88044): a failed start looks once more, a little later. */
const RECHECK_SETTINGS_MS = 2000;

const STOP_TIMEOUT_MS = 10_000;

/** Start the server with the current settings; a start-up failure is an error toast. */
async function startServer(ui: Ui): Promise<void> {
  const { output, progressUi, notifier } = ui;
  if (client) {
    // Its shutdown stops the model host and any training worker: more than the client's 2 s
    await client.stop(STOP_TIMEOUT_MS).catch((err: unknown) => output.warn(`stopping the server: ${String(err)}`));
    client = undefined;
  }
  const config = vscode.workspace.getConfiguration(SECTION);
  let serverCommand: { command: string; args: string[] };
  try {
    serverCommand = readServerCommand(config);
  } catch (err) {
    notifier.error(`AI LSP: ${(err as Error).message}`);
    return;
  }
  const settings = readServerSettings(config);
  const serverOptions: ServerOptions = {
    command: serverCommand.command,
    args: serverCommand.args, // stdio, without the `--stdio` flag a `transport` would append
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: documentLanguages(settings).flatMap((language) => [
      { scheme: 'file', language },
      { scheme: 'untitled', language },
    ]),
    initializationOptions: settings,
    outputChannel: output,
    stdioOptions: {
      stdout: (input, channel) => logStderr(input, channel),  // used only off stdio transport
      stderr: (input, channel) => logStderr(input, channel),
    },
  };
  ui.stateUi.languages = documentLanguages(settings);
  const next = quietWhileStarting(new LanguageClient('aiLsp', 'AI LSP', serverOptions, clientOptions));
  next.registerFeature(progressUi.feature(next));
  next.registerFeature(messageFeature(next, ui.settings));
  client = next;
  try {
    await next.start();
    void ui.stateUi.refresh();
  } catch (err) {
    const tried = JSON.stringify(serverCommand);
    setTimeout(() => {
      let now: string | undefined;
      try {
        now = JSON.stringify(readServerCommand(vscode.workspace.getConfiguration(SECTION)));
      } catch {
        return;  // an unusable setting was reported already
      }
      if (client === next && now !== tried) {
        output.info('AI LSP: the server command setting arrived after start-up; starting again');
        void restart(ui);
      }
    }, RECHECK_SETTINGS_MS);
    notifier.error(
      `AI LSP: could not start \`${[serverCommand.command, ...serverCommand.args].join(' ')}\`: ` +
        `${(err as Error).message ?? String(err)}. Install it (\`uv tool install .\` in a clone of ` +
        'ai-lsp-tune), or set aiLsp.server.command to the full command line in your User settings ' +
        '(Remote settings in a remote window); the server restarts when the setting changes.',
    );
  }
}

/** The model quick pick, with the served row active: Enter keeps what serves. */
function pickModel(items: ModelItem[]): Promise<ModelItem | undefined> {
  const pick = vscode.window.createQuickPick<ModelItem>();
  pick.title = 'AI LSP: models of this workspace';
  pick.placeholder = 'The model to serve (the base model, or a fine-tune)';
  pick.matchOnDetail = true;
  pick.items = items;
  pick.activeItems = items.filter((item) => item.serving);
  return new Promise((resolve) => {
    let chosen: ModelItem | undefined;
    pick.onDidAccept(() => {
      chosen = pick.selectedItems[0] ?? pick.activeItems[0];
      pick.hide();
    });
    pick.onDidHide(() => {
      pick.dispose();
      resolve(chosen);
    });
    pick.show();
  });
}

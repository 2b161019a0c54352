// The server's messages as VS Code toasts, with the actions a user expects beside them: "Open
// Settings" on a message that names a setting, "Switch to local" where the remote backend is in
// the way, and the gate's decision as a dialog that waits for an answer.
import * as vscode from 'vscode';
import type { BaseLanguageClient, StaticFeature } from 'vscode-languageclient';
import {
  type MessageActionItem,
  MessageType,
  ShowMessageNotification,
  ShowMessageRequest,
  type ShowMessageRequestParams,
} from 'vscode-languageserver-protocol';

import { ServerCommand } from './commands';

export const OPEN_SETTINGS = 'Open Settings';
export const SWITCH_TO_LOCAL = 'Switch to local';
export const KEEP_CURRENT = 'Keep current';

/** An action the server offers: its title, and the id of the command it amounts to. */
type OfferedAction = MessageActionItem & { id?: string };

const SETTING_ID = /\baiLsp(?:\.[A-Za-z]+)+/g;

/** The contributed settings a message names (a setting id is a name, not prose), in order. */
export function settingsNamed(message: string, known: ReadonlySet<string>): string[] {
  const named: string[] = [];
  for (const match of message.matchAll(SETTING_ID)) {
    let id = match[0];
    while (!known.has(id) && id.includes('.', 'aiLsp.'.length)) {
      id = id.slice(0, id.lastIndexOf('.'));  // "aiLsp.finetune.force." at a sentence's end
    }
    if (known.has(id) && !named.includes(id)) {
      named.push(id);
    }
  }
  return named;
}

/** What the extension needs from VS Code to act on a message (kept small so tests can fake it). */
export interface SettingsActions {
  /** Every `aiLsp.*` setting id the extension contributes. */
  known: ReadonlySet<string>;
  /** The effective `aiLsp.backend`. */
  backend(): string | undefined;
  openSettings(id: string): void;
  switchToLocal(): void;
}

/** The extension's own actions for a message: "Switch to local", "Open Settings". */
export function extraActions(message: string, settings: SettingsActions): string[] {
  const named = settingsNamed(message, settings.known);
  const extra: string[] = [];
  if (named.includes('aiLsp.backend') && settings.backend() === 'remote') {
    extra.push(SWITCH_TO_LOCAL);
  }
  if (named.length > 0) {
    extra.push(OPEN_SETTINGS);
  }
  return extra;
}

/** Run one of `extraActions`; false when `choice` is not one of them. */
export function runExtra(choice: string | undefined, message: string, settings: SettingsActions): boolean {
  if (choice === SWITCH_TO_LOCAL) {
    settings.switchToLocal();
    return true;
  }
  if (choice === OPEN_SETTINGS) {
    settings.openSettings(settingsNamed(message, settings.known)[0]);
    return true;
  }
  return false;
}

type Show = (message: string, ...items: string[]) => Thenable<string | undefined>;

function showFor(type: MessageType): Show {
  if (type === MessageType.Error) {
    return vscode.window.showErrorMessage;
  }
  return type === MessageType.Warning ? vscode.window.showWarningMessage : vscode.window.showInformationMessage;
}

/** A toast with the server's actions and ours; resolves to the server action picked, if any. */
export async function toast(
  type: MessageType,
  message: string,
  settings: SettingsActions,
  actions: string[] = [],
): Promise<string | undefined> {
  const choice = await showFor(type)(message, ...actions, ...extraActions(message, settings));
  return runExtra(choice, message, settings) ? undefined : choice;
}

/** The gate's "Use it anyway?": a dialog that stays until answered (a toast hides itself). */
async function decide(params: ShowMessageRequestParams, use: OfferedAction): Promise<MessageActionItem | null> {
  const items: vscode.MessageItem[] = [{ title: use.title }, { title: KEEP_CURRENT, isCloseAffordance: true }];
  const picked = await vscode.window.showWarningMessage(params.message, { modal: true }, ...items);
  return picked?.title === use.title ? use : null;
}

/** A client feature that takes over `window/showMessage` and `window/showMessageRequest`
 * (registered after the built-in handlers, so it wins). */
export function messageFeature(client: BaseLanguageClient, settings: SettingsActions): StaticFeature {
  return {
    getState: () => ({ kind: 'static' }),
    fillClientCapabilities: () => undefined,
    initialize: () => {
      client.onNotification(ShowMessageNotification.type, ({ type, message }) => {
        void toast(type, message, settings);
      });
      client.onRequest(ShowMessageRequest.type, async (params) => {
        const use = (params.actions as OfferedAction[] | undefined)?.find((a) => a.id === ServerCommand.use);
        if (use) {
          return decide(params, use);  // the gate's offer: serve the model it kept out
        }
        const offered = (params.actions ?? []).map((a) => a.title);
        const choice = await toast(params.type, params.message, settings, offered);
        return params.actions?.find((a) => a.title === choice) ?? null;
      });
    },
    clear: () => undefined,
  };
}

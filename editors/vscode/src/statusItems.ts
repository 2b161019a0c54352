// State at a glance: the status-bar item (progress while a run goes, else what answers and the
// last outcome's icon), a language-status item on analysed files, and the `aiLsp.finetuneRunning`
// context key that lists "Stop the running fine-tune" only while a run goes.
import * as vscode from 'vscode';

import type { ProgressView } from './progress';
import { type ListedModel, type ServerStatus, type StateView, stateView } from './stateView';

/** Reads the server's state; undefined while it is not running. */
export type StateQuery = () => Promise<{ status: ServerStatus; models?: ListedModel[] } | undefined>;

const POLL_MS = 10_000;  // rollbacks and swaps also happen from follow-up toasts
const SEVERITY = {
  info: vscode.LanguageStatusSeverity.Information,
  warning: vscode.LanguageStatusSeverity.Warning,
  error: vscode.LanguageStatusSeverity.Error,
};

export class ServerStateUi implements vscode.Disposable {
  private readonly language: vscode.LanguageStatusItem;
  private view: StateView | undefined;
  private progress = false;
  private running: boolean | undefined;
  private readonly timer: NodeJS.Timeout;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly statusBar: vscode.StatusBarItem,
    private readonly query: StateQuery,
    languages: string[],
  ) {
    this.language = vscode.languages.createLanguageStatusItem('aiLsp.state', languages);
    this.language.name = 'AI LSP';
    this.language.command = { title: 'Status', command: 'aiLsp.status' };
    this.language.text = 'AI LSP: starting';
    this.timer = setInterval(() => void this.refresh(), POLL_MS);
  }

  set languages(languages: string[]) {
    this.language.selector = languages;
  }

  /** Called with each progress view: while it is active the status bar is the progress. */
  onProgress(view: ProgressView): void {
    const was = this.progress;
    this.progress = view.active;
    this.setRunning(view.active || Boolean(this.view?.running));
    if (!view.active) {
      this.render();  // at once: the progress's end never shows a check mark for a failure
      if (was) {
        void this.refresh();
      }
    }
  }

  /** Ask the server what answers now and how the last run ended. */
  refresh(): Promise<void> {
    this.refreshing ??= this.query()
      .then((state) => {
        this.view = state ? stateView(state.status, state.models) : undefined;
      }, () => undefined)
      .finally(() => {
        this.refreshing = undefined;
        this.setRunning(this.progress || Boolean(this.view?.running));
        this.render();
      });
    return this.refreshing;
  }

  private render(): void {
    const view = this.view;
    this.language.busy = this.progress || Boolean(view?.running);
    this.language.text = view ? `AI LSP: ${view.answers}` : 'AI LSP: server not running';
    this.language.detail = view?.outcome || undefined;
    this.language.severity = SEVERITY[view?.severity ?? 'info'];
    if (this.progress) {
      return;  // the progress item's text stays until its end
    }
    this.statusBar.text = view?.text ?? '$(hubot) AI: off';
    this.statusBar.tooltip = view?.tooltip ?? 'AI LSP: the server is not running (click for status)';
  }

  private setRunning(running: boolean): void {
    if (running !== this.running) {
      this.running = running;
      void vscode.commands.executeCommand('setContext', 'aiLsp.finetuneRunning', running);
    }
  }

  dispose(): void {
    clearInterval(this.timer);
    this.language.dispose();
  }
}

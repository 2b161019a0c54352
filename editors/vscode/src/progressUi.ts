// Server work-done progress as VS Code shows long work: a notification (with Cancel while the
// server says the work is cancellable) with a
// percentage bar, and a status-bar item with the percentage and phase.
import * as vscode from 'vscode';
import type { BaseLanguageClient, StaticFeature } from 'vscode-languageclient';
import {
  type ProgressToken,
  WorkDoneProgress,
  WorkDoneProgressCancelNotification,
  WorkDoneProgressCreateRequest,
} from 'vscode-languageserver-protocol';

import { ProgressTracker, type ProgressValue, type ProgressView } from './progress';

const IDLE_AFTER_END_MS = 8000;

interface Notification {
  cancellable: boolean;
  reported: number;
  reportTo?: vscode.Progress<{ message?: string; increment?: number }>;
  finish: () => void;
}

export class WorkDoneProgressUi implements vscode.Disposable {
  private readonly tracker = new ProgressTracker();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly statusBar: vscode.StatusBarItem,
    private readonly onChange?: (view: ProgressView) => void,
  ) {
    this.show(this.tracker.idle());
  }

  /**
   * A client feature that takes over `window/workDoneProgress/create` (registered after the
   * built-in one, so it wins): the built-in shows only a spinner, we show the percentage.
   */
  feature(client: BaseLanguageClient): StaticFeature {
    return {
      getState: () => ({ kind: 'static' }),
      fillClientCapabilities: (capabilities) => {
        capabilities.window = { ...capabilities.window, workDoneProgress: true };
      },
      initialize: () => {
        client.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => this.create(client, token));
      },
      clear: () => this.show(this.tracker.idle()),
    };
  }

  private create(client: BaseLanguageClient, token: ProgressToken): void {
    let title = 'AI LSP';
    let notification: Notification | undefined;
    const pending: ProgressValue[] = [];

    // VS Code cannot take the Cancel button off a shown notification: when the server says the
    // work is no longer cancellable (the swap), the rest goes on in a notification without one.
    const open = (cancellable: boolean): void => {
      notification?.finish();
      const shown: Notification = { cancellable, reported: 0, finish: () => undefined };
      const done = new Promise<void>((resolve) => (shown.finish = resolve));
      notification = shown;
      void vscode.window.withProgress(
        { location: vscode.ProgressLocation.Notification, title: `AI LSP: ${title}`, cancellable },
        (progress, cancel) => {
          shown.reportTo = progress;
          cancel.onCancellationRequested(() => {
            if (shown.cancellable && notification === shown) {
              void client.sendNotification(WorkDoneProgressCancelNotification.type, { token });
            }
          });
          pending.splice(0).forEach(apply);
          return done;
        },
      );
    };

    const apply = (value: ProgressValue): void => {
      const shown = notification;
      if (shown?.reportTo === undefined) {
        pending.push(value);
        return;
      }
      if (value.percentage !== undefined && value.percentage > shown.reported) {
        shown.reportTo.report({ message: value.message, increment: value.percentage - shown.reported });
        shown.reported = value.percentage;
      } else if (value.message) {
        shown.reportTo.report({ message: value.message });
      }
    };

    const subscription = client.onProgress(WorkDoneProgress.type, token, (value) => {
      const typed = value as ProgressValue;
      this.show(this.tracker.update(typed));
      if (typed.kind === 'begin') {
        title = typed.title ?? title;
        open(typed.cancellable ?? false);
        apply(typed);
      } else if (typed.kind === 'report') {
        if (notification !== undefined && typed.cancellable !== undefined && typed.cancellable !== notification.cancellable) {
          open(typed.cancellable);
        }
        apply(typed);
      } else {
        subscription.dispose();
        notification?.finish();
        this.scheduleIdle();
      }
    });
  }

  private scheduleIdle(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (!this.tracker.view().active) {
        this.show(this.tracker.idle());
      }
    }, IDLE_AFTER_END_MS);
  }

  private show(view: ProgressView): void {
    this.statusBar.text = view.text;
    this.statusBar.tooltip = view.tooltip;
    this.onChange?.(view);
  }

  dispose(): void {
    clearTimeout(this.idleTimer);
  }
}

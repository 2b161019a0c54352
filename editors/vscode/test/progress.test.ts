import assert = require('node:assert/strict');
import { test } from 'node:test';

import { installVscodeMock, recorded, reset } from './vscodeMock';

installVscodeMock();
// Loaded after the mock: these modules import `vscode`.
import { phaseOf, type ProgressFields, ProgressTracker } from '../src/progress';
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { WorkDoneProgressUi } = require('../src/progressUi') as typeof import('../src/progressUi');

/** The server's structured fields of a progress value (`value.aiLsp`). */
function fields(percent: number, phase: string, more: Partial<ProgressFields> = {}): ProgressFields {
  return { phase, percent, message: `${percent}% · ${phase}`, ...more };
}

test('the phase is the server\'s phase with its step count, nothing read from the message', () => {
  assert.equal(phaseOf(fields(42, 'training', { step: 2, totalSteps: 3, loss: 0.84 })), 'training 2/3');
  assert.equal(phaseOf(fields(3, 'preparing', { note: '16 examples' })), 'preparing');
  assert.equal(phaseOf({ phase: 'evaluating', percent: 80, message: '80% · training 9/9 · odd words' }), 'evaluating');
});

test('the status bar shows percentage and phase while running, then the outcome', () => {
  const tracker = new ProgressTracker();
  assert.equal(tracker.view().active, false);
  tracker.update({ kind: 'begin', title: 'Fine-tune on my traces', message: '0% · preparing', percentage: 0, aiLsp: fields(0, 'preparing') });
  assert.equal(tracker.view().text, '$(sync~spin) AI 0% · preparing');
  const training = fields(42, 'training', { step: 2, totalSteps: 3, loss: 0.84 });
  assert.equal(tracker.update({ kind: 'report', message: '42% · training 2/3 · loss 0.84', percentage: 42, aiLsp: training }).text,
    '$(sync~spin) AI 42% · training 2/3');
  assert.equal(tracker.update({ kind: 'report', message: '43% · training 2/3 · loss 0.80' }).text,
    '$(sync~spin) AI 42% · training 2/3');
  const end = tracker.update({
    kind: 'end',
    message: '100% · now serving the fine-tuned model (valid JSON 0% → 95% · snippet F1 0.00 → 0.71)',
    aiLsp: fields(100, 'done', { outcome: 'now serving the fine-tuned model', message: '' }),
  });
  assert.equal(end.active, false);
  assert.equal(end.text, '$(check) AI LSP: now serving the fine-tuned model');
  assert.match(end.tooltip, /snippet F1 0.00 → 0.71/);
});

/** A language client that lets the test play the server's side of work-done progress. */
function fakeClient() {
  const requests = new Map<string, (params: unknown) => unknown>();
  const progress = new Map<string, (value: unknown) => void>();
  const notifications: { method: string; params: unknown }[] = [];
  const client = {
    onRequest: (type: { method: string }, handler: (params: unknown) => unknown) => {
      requests.set(type.method, handler);
      return { dispose: () => undefined };
    },
    onProgress: (_type: unknown, token: string, handler: (value: unknown) => void) => {
      progress.set(token, handler);
      return { dispose: () => progress.delete(token) };
    },
    sendNotification: async (type: { method: string }, params: unknown) => {
      notifications.push({ method: type.method, params });
    },
  };
  return { client, requests, progress, notifications };
}

test('server progress becomes a cancellable notification with a percentage and a status-bar item', async () => {
  reset();
  const ui = new WorkDoneProgressUi(
    (require('vscode') as typeof import('vscode')).window.createStatusBarItem(),
  );
  const fake = fakeClient();
  const feature = ui.feature(fake.client as never);
  const capabilities: { window?: { workDoneProgress?: boolean } } = {};
  feature.fillClientCapabilities(capabilities as never);
  assert.equal(capabilities.window?.workDoneProgress, true);
  feature.initialize({} as never, undefined);

  fake.requests.get('window/workDoneProgress/create')!({ token: 'ft-1' });
  const send = fake.progress.get('ft-1')!;
  send({ kind: 'begin', title: 'Fine-tune on my traces', message: '0% · preparing the dataset', percentage: 0, cancellable: true });
  send({ kind: 'report', message: '30% · training 1/3 · loss 1.20', percentage: 30, aiLsp: fields(30, 'training', { step: 1, totalSteps: 3 }) });
  assert.equal(recorded.statusBar.text, '$(sync~spin) AI 30% · training 1/3');
  send({ kind: 'report', message: '75% · evaluating', percentage: 75 });

  const shown = recorded.withProgress[0];
  assert.deepEqual(shown.options, { location: 15, title: 'AI LSP: Fine-tune on my traces', cancellable: true });
  const increments = shown.reports.map((r) => r.increment ?? 0);
  assert.equal(increments.reduce((a, b) => a + b, 0), 75);
  assert.ok(increments.every((i) => i >= 0));

  shown.cancel();
  assert.deepEqual(fake.notifications, [{ method: 'window/workDoneProgress/cancel', params: { token: 'ft-1' } }]);

  send({ kind: 'end', message: 'cancelled (checkpoint kept: the next run resumes)' });
  await shown.done; // the notification closes when the server ends the progress
  assert.match(recorded.statusBar.text, /cancelled/);
  assert.equal(fake.progress.has('ft-1'), false);
  ui.dispose();
});

test('the swap is not cancellable: its notification has no Cancel, and a late cancel is not sent', async () => {
  reset();
  const ui = new WorkDoneProgressUi(
    (require('vscode') as typeof import('vscode')).window.createStatusBarItem(),
  );
  const fake = fakeClient();
  ui.feature(fake.client as never).initialize({} as never, undefined);
  fake.requests.get('window/workDoneProgress/create')!({ token: 'ft-2' });
  const send = fake.progress.get('ft-2')!;
  send({ kind: 'begin', title: 'Fine-tune on my traces', message: '0% · preparing the dataset', percentage: 0, cancellable: true });
  send({ kind: 'report', message: '90% · evaluating 6/6 · new model', percentage: 90, cancellable: true });
  send({ kind: 'report', message: '95% · swapping · loading the new model', percentage: 95, cancellable: false });

  assert.equal(recorded.withProgress.length, 2);
  const [training, swapping] = recorded.withProgress;
  await training.done; // the cancellable notification closed when the swap began
  assert.equal(swapping.options.cancellable, false);
  assert.equal(swapping.options.title, 'AI LSP: Fine-tune on my traces');
  assert.deepEqual(swapping.reports, [{ message: '95% · swapping · loading the new model', increment: 95 }]);

  training.cancel(); // a stale Cancel click on the closed notification
  assert.deepEqual(fake.notifications, []);
  send({ kind: 'end', message: '100% · now serving the fine-tuned model' });
  await swapping.done;
  ui.dispose();
});

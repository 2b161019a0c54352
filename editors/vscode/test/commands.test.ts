import assert = require('node:assert/strict');
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { describeResult, forward, modelItems, PALETTE, ServerCommand, type CommandTarget } from '../src/commands';

const packageJson = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));

function notifier() {
  const seen = { info: [] as string[], error: [] as string[] };
  return { seen, notifier: { info: (m: string) => seen.info.push(m), error: (m: string) => seen.error.push(m) } };
}

function target(advertised: string[] | undefined, answer: (c: string, a: unknown[]) => Promise<unknown>) {
  const sent: { command: string; args: unknown[] }[] = [];
  const t: CommandTarget = {
    advertisedCommands: () => advertised,
    executeCommand: (command, args) => {
      sent.push({ command, args });
      return answer(command, args);
    },
  };
  return { sent, t };
}

test('the palette shows the commands of the issues, each forwarding to a server command', () => {
  const titles = Object.fromEntries(
    packageJson.contributes.commands.map((c: { command: string; title: string; category: string }) => [
      c.command,
      `${c.category}: ${c.title}`,
    ]),
  );
  assert.deepEqual(
    Object.keys(PALETTE).map((id) => [titles[id], PALETTE[id]]),
    [
      ['AI LSP: Fine-tune on my traces', 'ai-lsp.finetune'],
      ['AI LSP: Stop the running fine-tune', 'ai-lsp.finetune.cancel'],
      ['AI LSP: Roll back model', 'ai-lsp.model.rollback'],
      ['AI LSP: Show fine-tune status', 'ai-lsp.finetune.status'],
      ['AI LSP: Export model for Ollama / llama.cpp', 'ai-lsp.model.export'],
    ],
  );
});

test('typing "Fine-tune" in the palette lists "Fine-tune on my traces" first', () => {
  // The palette orders matches by recent use, then by label: no other match may sort before it.
  const matching = packageJson.contributes.commands
    .map((c: { command: string; title: string; category: string }) => ({ id: c.command, label: `${c.category}: ${c.title}` }))
    .filter((c: { label: string }) => /fine-tune/i.test(c.label))
    .sort((a: { label: string }, b: { label: string }) => a.label.localeCompare(b.label));
  assert.equal(matching[0].id, 'aiLsp.finetune');
  assert.ok(matching.length >= 3); // "Stop the running fine-tune", "Show fine-tune status" match too
});

test('a command goes to workspace/executeCommand and its answer is shown', async () => {
  const { seen, notifier: n } = notifier();
  const { sent, t } = target(Object.values(ServerCommand), async () => ({ runId: 'r1', message: 'fine-tune started (run r1)' }));
  const result = await forward(t, n, ServerCommand.finetune);
  assert.deepEqual(sent, [{ command: 'ai-lsp.finetune', args: [] }]);
  assert.deepEqual(result, { runId: 'r1', message: 'fine-tune started (run r1)' });
  assert.deepEqual(seen, { info: ['AI LSP: fine-tune started (run r1)'], error: [] });
});

test('a refusal from the server is an error toast with its message', async () => {
  const { seen, notifier: n } = notifier();
  const { t } = target(Object.values(ServerCommand), async () => {
    throw Object.assign(new Error('a fine-tune is already running (training 20%); cancel it first'), { code: -32603 });
  });
  assert.equal(await forward(t, n, ServerCommand.finetune), undefined);
  assert.deepEqual(seen.error, ['AI LSP: a fine-tune is already running (training 20%); cancel it first']);
});

test('a server that is not running, or does not offer the command, is an error, never silence', async () => {
  const down = notifier();
  const { sent: sentDown, t: tDown } = target(undefined, async () => null);
  await forward(tDown, down.notifier, ServerCommand.rollback);
  assert.equal(sentDown.length, 0);
  assert.match(down.seen.error[0], /not running/);

  const old = notifier();
  const { sent: sentOld, t: tOld } = target(['ai-lsp.dismiss'], async () => null);
  await forward(tOld, old.notifier, ServerCommand.rollback);
  assert.equal(sentOld.length, 0);
  assert.match(old.seen.error[0], /does not offer "ai-lsp.model.rollback"/);
});

test('a command answer shows only its message, never a dump of fields', () => {
  const status = {
    state: 'training',
    phase: 'training',
    runId: '20250101-1',
    progress: { percentage: 42, message: '42% · training 2/3 · loss 0.84' },
    servedModel: '/home/me/.local/share/ai-lsp-tune/workspaces/p-1/finetune/runs/20250101-1/output/model',
    message: 'Fine-tune 20250101-1: 42% · training 2/3 · loss 0.84; serving ~/…/runs/20250101-1/output/model',
  };
  assert.equal(describeResult(status), status.message);
  assert.equal(describeResult({ state: 'idle' }), undefined);
  assert.equal(describeResult(null), undefined);
  assert.equal(describeResult('ok'), 'ok');
});

test("the model list becomes quick-pick items with the server's name and detail line", () => {
  const items = modelItems({
    models: [
      { path: '/m/base', label: 'base (base model)', detail: 'issue F1 0.00 · 8 test examples', serving: false },
      {
        path: '/runs/r2/output/model',
        label: 'base fine-tune · Dec 3 14:05',
        detail: 'issue F1 0.42 (change +0.10..+0.31) · val loss 1.35 · 8 test examples',
        serving: true,
        metrics: { schema_valid_rate: 1, issue_f1: 0.42, n: 8 },
      },
    ],
  });
  assert.deepEqual(items, [
    {
      label: 'base (base model)',
      description: undefined,
      detail: 'issue F1 0.00 · 8 test examples',
      path: '/m/base',
      serving: false,
    },
    {
      label: '$(check) base fine-tune · Dec 3 14:05',
      description: 'serving',
      detail: 'issue F1 0.42 (change +0.10..+0.31) · val loss 1.35 · 8 test examples',
      path: '/runs/r2/output/model',
      serving: true,
    },
  ]);
  assert.deepEqual(modelItems(undefined), []);
});

import assert = require('node:assert/strict');
import { test } from 'node:test';

import { installVscodeMock } from './vscodeMock';

installVscodeMock();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const messages = require('../src/messages') as typeof import('../src/messages');
const { extraActions, runExtra, settingsNamed, OPEN_SETTINGS, SWITCH_TO_LOCAL } = messages;

const known = new Set(['aiLsp.backend', 'aiLsp.model', 'aiLsp.finetune.learningRate', 'aiLsp.finetune.force']);

function settings(backend = 'local') {
  const did: string[] = [];
  return {
    did,
    actions: {
      known,
      backend: () => backend,
      openSettings: (id: string) => did.push(`open ${id}`),
      switchToLocal: () => did.push('local'),
    },
  };
}

test('a message that names a setting offers Open Settings, which shows that setting', () => {
  const text = 'AI LSP: aiLsp.finetune.learningRate must be more than 0 (it is -1); the fine-tune did not start.';
  assert.deepEqual(settingsNamed(text, known), ['aiLsp.finetune.learningRate']);
  const s = settings();
  assert.deepEqual(extraActions(text, s.actions), [OPEN_SETTINGS]);
  assert.equal(runExtra(OPEN_SETTINGS, text, s.actions), true);
  assert.deepEqual(s.did, ['open aiLsp.finetune.learningRate']);
  // At a sentence's end, and names that are no setting of ours
  assert.deepEqual(settingsNamed('set aiLsp.finetune.force. Or aiLsp.nothing here', known), ['aiLsp.finetune.force']);
  assert.deepEqual(extraActions('Fine-tuned model now serving.', s.actions), []);
});

test('the refusal while the teacher serves offers Switch to local, which sets aiLsp.backend', () => {
  const text = 'AI LSP: no local model is being served (the remote backend is in use); set "aiLsp.backend" to "local" first';
  const remote = settings('remote');
  assert.deepEqual(extraActions(text, remote.actions), [SWITCH_TO_LOCAL, OPEN_SETTINGS]);
  assert.equal(runExtra(SWITCH_TO_LOCAL, text, remote.actions), true);
  assert.deepEqual(remote.did, ['local']);
  assert.deepEqual(extraActions(text, settings('local').actions), [OPEN_SETTINGS]);
  assert.equal(runExtra('Show log', text, remote.actions), false);
});

test("the gate's decision is a dialog that waits: Use it anyway, or Keep current", async () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { recorded, reset } = require('./vscodeMock') as typeof import('./vscodeMock');
  const handlers = new Map<string, (params: unknown) => unknown>();
  const client = {
    onNotification: () => ({ dispose: () => undefined }),
    onRequest: (type: { method: string }, handler: (params: unknown) => unknown) => {
      handlers.set(type.method, handler);
      return { dispose: () => undefined };
    },
  };
  messages.messageFeature(client as never, settings().actions).initialize({} as never, undefined);
  const ask = handlers.get('window/showMessageRequest')!;
  const params = {
    type: 2,
    message: 'Not swapped in: only 2 test examples to judge it on; issue F1 0.60',
    actions: [{ title: 'Use it anyway', id: 'ai-lsp.model.use' }],
  };
  const use = params.actions[0];
  for (const [answer, expected] of [['Use it anyway', use], ['Keep current', null], [undefined, null]] as const) {
    reset();
    recorded.pick = (items) => (items as { title: string }[]).find((i) => i.title === answer);
    assert.deepEqual(await ask(params), expected);
    const [shown] = recorded.warnings;
    assert.equal(shown.message, params.message);
    assert.deepEqual(shown.rest, [
      { modal: true }, { title: 'Use it anyway' }, { title: 'Keep current', isCloseAffordance: true },
    ]);
  }
});

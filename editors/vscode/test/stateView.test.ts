import assert = require('node:assert/strict');
import { test } from 'node:test';

import { stateView } from '../src/stateView';

const base = { label: 'tiny-model', path: '/m/tiny-model', runId: null };
const tune = { label: 'tiny-model · 3 Dec 09:12 · F1 0.71', path: '/runs/r1/fused', runId: 'r1' };

test('the status item says what answers now: the teacher, the base or the fine-tune', () => {
  const teacher = stateView({ state: 'idle', backend: 'remote', servedModel: null });
  assert.equal(teacher.text, '$(hubot) AI: teacher');
  const onBase = stateView({ state: 'idle', backend: 'local', servedModel: '/m/tiny-model' },
    [{ ...base, serving: true }, tune]);
  assert.equal(onBase.text, '$(hubot) AI: base');
  assert.equal(onBase.answers, 'base tiny-model');
  const onTune = stateView({ state: 'succeeded', backend: 'local', servedModel: '/runs/r1/fused', lastRun: { state: 'succeeded' } },
    [base, { ...tune, serving: true }]);
  assert.equal(onTune.text, '$(check) AI: fine-tune');
  assert.equal(onTune.answers, `fine-tune ${tune.label}`);
  assert.equal(onTune.outcome, 'last fine-tune succeeded');
});

test('a failed run is never a check mark, and its outcome is an error', () => {
  for (const [state, icon, severity] of [
    ['failed', '$(error)', 'error'], ['rejected', '$(warning)', 'warning'], ['cancelled', '$(circle-slash)', 'info'],
  ]) {
    const view = stateView({ state, backend: 'local', servedModel: '/m/tiny-model', lastRun: { state } }, [{ ...base, serving: true }]);
    assert.equal(view.text, `${icon} AI: base`);
    assert.equal(view.severity, severity);
    assert.equal(view.outcome, `last fine-tune ${state}`);
  }
});

test('while a run goes the item spins and says its state; the text stays a few short words', () => {
  const view = stateView({ state: 'training', backend: 'local', servedModel: '/m/tiny-model' }, [{ ...base, serving: true }]);
  assert.equal(view.running, true);
  assert.equal(view.text, '$(sync~spin) AI: base');
  assert.equal(view.outcome, 'fine-tune training');
  const none = stateView({ state: 'idle', backend: 'local', servedModel: null });
  assert.equal(none.text, '$(hubot) AI: no model');
});

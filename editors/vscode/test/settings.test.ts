import assert = require('node:assert/strict');
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  DEFAULT_LANGUAGES,
  documentLanguages,
  readServerCommand,
  readServerSettings,
  type ConfigurationReader,
} from '../src/settings';

const packageJson = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default: unknown }> = packageJson.contributes.configuration.properties;

/** A configuration reader backed by package.json's defaults, overridden by `values`. */
function reader(values: Record<string, unknown> = {}): ConfigurationReader {
  return {
    get<T>(section: string, fallback: T): T {
      if (section in values) return values[section] as T;
      const declared = properties[`aiLsp.${section}`];
      return declared ? (declared.default as T) : fallback;
    },
  };
}

test('every server setting is declared in package.json with the same default the client assumes', () => {
  const declared = readServerSettings(reader());
  const assumed = readServerSettings({ get: <T>(_: string, fallback: T) => fallback });
  assert.deepEqual(declared, assumed);
});

test('settings go to the server camelCase, nested finetune, blanks as null', () => {
  const settings = readServerSettings(
    reader({ model: '/models/mine', debounceMs: 250, traceFile: '  ', 'finetune.numEpochs': 1 }),
  );
  assert.equal(settings.model, '/models/mine');
  assert.equal(settings.debounceMs, 250);
  assert.equal(settings.traceFile, null);
  assert.equal(settings.finetune.numEpochs, 1);
  assert.deepEqual(Object.keys(settings).sort(), [
    'backend', 'constrainedDecoding', 'debounceMs', 'finetune', 'languages', 'maxDocumentBytes',
    'maxInputTokens', 'maxTokens', 'model', 'remoteModel', 'telemetry', 'traceFile',
  ]);
});

test('the server command defaults to ai-lsp serve and accepts uvx', () => {
  assert.deepEqual(readServerCommand(reader()), { command: 'ai-lsp', args: ['serve'] });
  const uvx = ['uvx', '--from', 'ai-lsp-tune', 'ai-lsp', 'serve'];
  assert.deepEqual(readServerCommand(reader({ 'server.command': uvx })), {
    command: 'uvx',
    args: uvx.slice(1),
  });
});

test('an unusable server command is a clear error', () => {
  for (const bad of [[], [''], 'ai-lsp serve']) {
    assert.throws(() => readServerCommand(reader({ 'server.command': bad })), /non-empty list of strings/);
  }
});

test('the client attaches to the configured languages, else to the usual programming languages', () => {
  assert.deepEqual(documentLanguages(readServerSettings(reader({ languages: ['python'] }))), ['python']);
  assert.deepEqual(documentLanguages(readServerSettings(reader())), DEFAULT_LANGUAGES);
});

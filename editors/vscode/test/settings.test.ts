import assert = require('node:assert/strict');
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  DEFAULT_LANGUAGES,
  documentLanguages,
  FINETUNE_SETTINGS,
  SERVER_SETTINGS,
  readServerCommand,
  readServerSettings,
  restartNeeded,
  type ConfigurationReader,
} from '../src/settings';

const packageJson = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default: unknown }> = Object.assign(
  {},
  ...packageJson.contributes.configuration.map((category: { properties: object }) => category.properties),
);

/** A configuration reader backed by package.json's defaults; `values` are what the user set. */
function reader(values: Record<string, unknown> = {}): ConfigurationReader {
  return {
    get<T>(section: string, fallback: T): T {
      if (section in values) return values[section] as T;
      const declared = properties[`aiLsp.${section}`];
      return declared ? (declared.default as T) : fallback;
    },
    inspect(section: string) {
      return section in values ? { globalValue: values[section] } : {};
    },
  };
}

test('every aiLsp setting of package.json is one the client forwards (or its own)', () => {
  const own = ['server.command', 'trace.server'];
  const forwarded = [...SERVER_SETTINGS, ...FINETUNE_SETTINGS.map((k) => `finetune.${k}`)];
  const declared = Object.keys(properties).map((k) => k.replace(/^aiLsp\./, ''));
  assert.deepEqual(declared.filter((k) => !own.includes(k)).sort(), [...forwarded].sort());
});

test('only settings the user set go to the server: its defaults and env vars apply otherwise', () => {
  assert.deepEqual(readServerSettings(reader()), {});
  const settings = readServerSettings(
    reader({ model: '/models/mine', debounceMs: 250, traceFile: '  ', 'finetune.numEpochs': 1 }),
  );
  assert.deepEqual(settings, {
    model: '/models/mine',
    debounceMs: 250,
    traceFile: null,
    finetune: { numEpochs: 1 },
  });
});

test('a change sends every setting the user did not set as null: a reset reaches the server', () => {
  const settings = readServerSettings(reader({ backend: 'remote' }), { resets: true });
  assert.equal(settings.backend, 'remote');
  assert.equal(settings.model, null);
  assert.equal(settings.finetune?.force, null);
  assert.deepEqual(Object.keys(settings).sort(), [...SERVER_SETTINGS, 'finetune'].sort());
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

test('a backend or model change goes to the running server; only the command and languages restart it', () => {
  const changed = (...sections: string[]) => (section: string) => ['aiLsp', ...sections].includes(section);
  assert.equal(restartNeeded(changed('aiLsp.backend'), true), false);
  assert.equal(restartNeeded(changed('aiLsp.model', 'aiLsp.finetune', 'aiLsp.finetune.loraRank'), true), false);
  assert.equal(restartNeeded(changed('aiLsp.server.command', 'aiLsp.server'), true), true);
  assert.equal(restartNeeded(changed('aiLsp.languages'), true), true);
  assert.equal(restartNeeded(changed('aiLsp.backend'), false), true); // a server that failed to start
});

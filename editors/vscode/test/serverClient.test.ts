import assert = require('node:assert/strict');
import { test } from 'node:test';

import { quietWhileStarting, stderrLogLine } from '../src/serverClient';

/** Like vscode-languageclient: a failed start reports "couldn't create connection" with 'force'. */
class FakeClient {
  shown: string[] = [];
  logged: string[] = [];
  constructor(private readonly starts: boolean) {}
  async start(): Promise<void> {
    if (!this.starts) {
      this.error("AI LSP client: couldn't create connection to server.", new Error('spawn ai-lsp ENOENT'), 'force');
      throw new Error('spawn ai-lsp ENOENT');
    }
  }
  error(message: string, _data?: unknown, showNotification: boolean | 'force' = true): void {
    this.logged.push(message);
    if (showNotification) {
      this.shown.push(message);
    }
  }
}

test('a server that cannot start is not a second toast from the language client', async () => {
  const client = quietWhileStarting(new FakeClient(false));
  await assert.rejects(client.start(), /ENOENT/);
  assert.deepEqual(client.shown, []); // the extension shows the one error, with the fix
  assert.deepEqual(client.logged, ["AI LSP client: couldn't create connection to server."]);
});

test('once started, the language client shows its errors as before', async () => {
  const client = quietWhileStarting(new FakeClient(true));
  await client.start();
  client.error('Connection to server got closed. Server will not be restarted.', undefined, 'force');
  assert.deepEqual(client.shown, ['Connection to server got closed. Server will not be restarted.']);
});

test("the server's stderr is logged at its own level, without a second timestamp", () => {
  assert.deepEqual(stderrLogLine('2026-12-03 07:45:06,123 ai_lsp_tune.serving.runner INFO model loaded', 'info'),
    { level: 'info', text: 'ai_lsp_tune.serving.runner: model loaded' });
  assert.deepEqual(stderrLogLine('2026-12-03 07:45:06,123 pygls WARNING odd', 'info').level, 'warn');
  assert.deepEqual(stderrLogLine('2026-12-03 07:45:06,123 x ERROR boom', 'info').level, 'error');
  assert.deepEqual(stderrLogLine('Traceback (most recent call last):', 'info').level, 'error');
  assert.deepEqual(stderrLogLine('  File "x.py", line 1', 'error'), { level: 'error', text: '  File "x.py", line 1' });
});

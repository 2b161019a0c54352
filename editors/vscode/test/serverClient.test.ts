import assert = require('node:assert/strict');
import { test } from 'node:test';

import { quietWhileStarting } from '../src/serverClient';

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

// Test-only extension: acts like a user through the VS Code API (open a file, run the palette
// command, edit) and writes what it observed to the JSON file named in AI_LSP_E2E_CONFIG.
const fs = require('fs');
const vscode = require('vscode');

exports.activate = async function activate() {
  const configPath = process.env.AI_LSP_E2E_CONFIG;
  if (!configPath) return;
  const plan = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  const obs = { steps: [], diagnostics: [], results: {} };
  const now = () => Date.now() / 1000;
  const save = () => fs.writeFileSync(plan.out, JSON.stringify(obs));
  const step = (name, data) => { obs.steps.push({ t: now(), name, data }); save(); };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  async function waitFor(ms, cond, what) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const value = await cond();
      if (value) return value;
      await sleep(200);
    }
    throw new Error(`timed out waiting for ${what}`);
  }
  try {
    const uri = vscode.Uri.file(plan.file);
    const ours = () => vscode.languages.getDiagnostics(uri).filter((d) => d.source === 'ai-lsp');
    vscode.languages.onDidChangeDiagnostics((e) => {
      if (e.uris.some((u) => u.fsPath === uri.fsPath)) {
        obs.diagnostics.push({ t: now(), items: ours().map((d) => ({ line: d.range.start.line, message: d.message })) });
        save();
      }
    });
    const doc = await vscode.workspace.openTextDocument(uri);
    const editor = await vscode.window.showTextDocument(doc);
    step('opened', { languageId: doc.languageId });
    await waitFor(plan.diagnostic_timeout_ms, () => ours().length > 0, 'a first diagnostic');
    step('first_diagnostic');

    const config = vscode.workspace.getConfiguration('aiLsp');
    for (const [key, value] of Object.entries(plan.before_finetune_settings || {})) {
      await config.update(key, value, vscode.ConfigurationTarget.Global);
    }
    step('settings_changed');
    obs.results.finetune = await vscode.commands.executeCommand('aiLsp.finetune');
    step('finetune_sent', obs.results.finetune);
    // The server's own command (registered by the language client) answers quietly.
    const final = await waitFor(plan.finetune_timeout_ms, async () => {
      const status = await vscode.commands.executeCommand('ai-lsp.finetune.status');
      return status && ['succeeded', 'failed', 'rejected', 'cancelled'].includes(status.state) ? status : undefined;
    }, 'the fine-tune to finish');
    obs.results.status_after = final;
    step('finetune_done', final);

    obs.swapped_at = now();
    await editor.edit((b) => b.insert(new vscode.Position(doc.lineCount, 0), plan.after_swap_edit + '\n'));
    await waitFor(plan.diagnostic_timeout_ms, () => obs.diagnostics.some((d) => d.t > obs.swapped_at), 'diagnostics after the swap');
    step('diagnostics_after_swap');
    obs.done = true;
  } catch (err) {
    obs.error = String(err && err.stack || err);
  }
  save();
};

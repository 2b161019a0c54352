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
        obs.diagnostics.push({ t: now(), items: ours().map((d) => ({
          line: d.range.start.line, character: d.range.start.character,
          endLine: d.range.end.line, endCharacter: d.range.end.character, message: d.message,
        })) });
        save();
      }
    });
    const doc = await vscode.workspace.openTextDocument(uri);
    const editor = await vscode.window.showTextDocument(doc);
    step('opened', { languageId: doc.languageId });
    await waitFor(plan.diagnostic_timeout_ms, () => ours().length > 0, 'a first diagnostic');
    step('first_diagnostic');

    // Rewrite the whole file, as a user would; resolve with the first diagnostics published
    // after it (those with items, when `withItems`).
    async function rewrite(text, what, withItems, ms = plan.diagnostic_timeout_ms) {
      const at = now();
      const whole = new vscode.Range(0, 0, doc.lineCount, 0);
      await editor.edit((b) => b.replace(whole, text));
      return waitFor(ms,
        () => obs.diagnostics.find((d) => d.t > at && (!withItems || d.items.length > 0)), what);
    }
    // Edits a user makes while working: each one is analysed and recorded as a trace.
    for (const [i, text] of (plan.edits || []).entries()) {
      await rewrite(text, `diagnostics after edit ${i + 1}`, true);
    }
    step('edited', { count: (plan.edits || []).length });

    const config = vscode.workspace.getConfiguration('aiLsp');
    for (const [key, value] of Object.entries(plan.before_finetune_settings || {})) {
      await config.update(key, value, vscode.ConfigurationTarget.Global);
    }
    step('settings_changed');
    if (plan.base_probe_text) {
      // What the model being fine-tuned finds before it learns from the traces.
      step('base_probe', await rewrite(plan.base_probe_text, 'diagnostics from the base model', false));
    }
    obs.results.finetune = await vscode.commands.executeCommand('aiLsp.finetune');
    step('finetune_sent', obs.results.finetune);
    // The server's own command (registered by the language client) answers quietly.
    const status = () => vscode.commands.executeCommand('ai-lsp.finetune.status');
    const final = await waitFor(plan.finetune_timeout_ms, async () => {
      const s = await status();
      return s && ['succeeded', 'failed', 'rejected', 'cancelled'].includes(s.state) ? s : undefined;
    }, 'the fine-tune to finish');
    obs.results.status_after = final;
    step('finetune_done', final);

    obs.swapped_at = now();
    step('diagnostics_after_swap', await rewrite(
      plan.after_swap_text, 'diagnostics after the swap', true, plan.after_swap_timeout_ms));

    // The swap notification's primary action, as a user clicking it: "Roll back".
    await vscode.commands.executeCommand('notification.acceptPrimaryAction');
    obs.results.status_after_rollback = await waitFor(plan.rollback_timeout_ms, async () => {
      const s = await status();
      return s && s.servedModel !== final.servedModel ? s : undefined;
    }, 'the roll back chosen in the swap notification');
    step('rolled_back', obs.results.status_after_rollback);
    obs.done = true;
  } catch (err) {
    obs.error = String(err && err.stack || err);
  }
  save();
};

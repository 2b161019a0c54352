-- Headless Neovim script for tests/test_nvim_decisions.py: a user at Neovim's own message area
-- (no notification plugin) fine-tunes; the gate keeps the old model and offers "Use it anyway".
--
-- Run as `nvim --headless -u nvim_decisions.lua` with AI_LSP_E2E_CONFIG pointing at a JSON plan.
-- It records what the user saw (the messages' whole text, the message area, any prompt that
-- would stop typing) to plan.out; pytest asserts on it.
local h = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/nvim_harness.lua')
local plan = h.plan
local finish = h.finish

local obs = h.observe({ steps = {}, prompts = {}, selects = {}, offers = {}, results = {} })
h.before_finish = function()
  local ok, ai = pcall(require, 'ai_lsp')
  obs.history = ok and ai.history or {}
  obs.screen = vim.fn.execute('messages')
  obs.echospace = vim.v.echospace
end

-- A modal prompt stops typing until answered: record it if anything asks one.
vim.fn.inputlist = function(items)
  table.insert(obs.prompts, items)
  return 0
end
vim.ui.select = function(items, opts, on_choice)
  table.insert(obs.selects, { prompt = opts and opts.prompt, count = #items })
  on_choice(nil, nil)
end
vim.api.nvim_create_autocmd('User', {
  pattern = 'AiLspMessage',
  callback = function(ev)
    table.insert(obs.offers, {
      message = ev.data.message,
      ids = vim.tbl_map(function(a) return a.id or vim.NIL end, ev.data.actions or {}),
    })
  end,
})

local function wait(ms, cond, what)
  if not h.wait(ms, cond, what, 100) then
    return false
  end
  table.insert(obs.steps, what)
  return true
end

--- The whole text of the first message since message number `from` that holds `text`.
local function said(from, text)
  local history = require('ai_lsp').history
  for i = from + 1, #history do
    if history[i]:find(text, 1, true) then
      return history[i]
    end
  end
end

local function status()
  local ai = require('ai_lsp')
  obs.results.status = nil
  ai.exec(ai.commands.status, nil, function(result) obs.results.status = result end)
  vim.wait(10000, function() return obs.results.status ~= nil end, 100)
  return obs.results.status or {}
end

local function run()
  local ai = require('ai_lsp')
  ai.setup({ cmd = plan.cmd, settings = plan.settings, filetypes = { 'python' } })
  vim.cmd.edit(vim.fn.fnameescape(plan.file))
  if not wait(plan.start_timeout_ms, function()
    local client = ai.client()
    return client ~= nil and client.initialized
  end, 'the server to start') then return end

  -- A trace file outside the project, named on the command line: refused, naming the setting.
  local from = #ai.history
  vim.cmd('AiLspFinetune ' .. vim.fn.fnameescape(plan.outside_trace))
  if not wait(30000, function() return said(from, 'outside the workspace') ~= nil end,
    'the refusal of a trace file outside the project') then return end
  obs.refusal = said(from, 'outside the workspace')

  from = #ai.history
  vim.cmd('AiLspFinetune')
  if not wait(plan.finetune_timeout_ms, function() return ai.pending ~= nil end,
    "the gate's offer") then return end
  obs.offer = said(from, ':AiLspUseAnyway')
  local before = status()
  obs.results.before = before

  from = #ai.history
  vim.cmd('AiLspUseAnyway')
  if not wait(60000, function()
    local s = status()
    return s.lastRun ~= nil and s.lastRun ~= vim.NIL and s.lastRun.swapped == true
      and s.servedModel == s.lastRun.candidateModel
  end, 'the fine-tune to serve') then return end
  obs.results.after = obs.results.status
  if not wait(30000, function() return said(from, ':AiLspRollback') ~= nil end,
    'the follow-up with :AiLspRollback') then return end
  obs.follow_up = said(from, ':AiLspRollback')
  finish(0, 'done')
end

h.run(run)

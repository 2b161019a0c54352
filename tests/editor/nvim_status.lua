-- Headless Neovim script for tests/test_nvim_status.py: what a user reads at a glance while
-- working (the statusline component), on :w, and from :AiLspStatus after a restart with other
-- settings. Records to plan.out (JSON); pytest asserts on it.
local h = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/nvim_harness.lua')
local plan = h.plan
local finish = h.finish

local obs = h.observe({ steps = {}, statusline = {}, results = {} })
local bufnr
h.before_finish = function()
  local ok, ai = pcall(require, 'ai_lsp')
  obs.history = ok and ai.history or {}
end

local sample
local function wait(ms, cond, what)
  if not h.wait(ms, function() sample() return cond() end, what, 20) then
    return false
  end
  table.insert(obs.steps, what)
  return true
end

-- The statusline as the user sees it, sampled while they work (each change of it recorded).
function sample()
  local line = require('ai_lsp').analysis(bufnr)
  if obs.statusline[#obs.statusline] ~= line then
    table.insert(obs.statusline, line)
  end
end
local timer = vim.uv.new_timer()

local function published()
  local last = require('ai_lsp').published[bufnr]
  return last and last.seq or 0
end

local function run()
  local ai = require('ai_lsp')
  ai.setup({ cmd = plan.cmd, settings = plan.settings, filetypes = { 'python' } })
  vim.cmd.edit(vim.fn.fnameescape(plan.file))
  bufnr = vim.api.nvim_get_current_buf()
  timer:start(0, 20, vim.schedule_wrap(sample))
  if not wait(plan.diagnostic_timeout_ms, function() return ai.analysis(bufnr) == 'AI 1 issue' end,
    'the first analysis') then return end

  -- :w with nothing changed: the server analyses again (the teacher is asked again).
  local before = published()
  vim.cmd('write')
  obs.right_after_save = ai.analysis(bufnr)
  if not wait(plan.diagnostic_timeout_ms, function()
    return published() > before and ai.analysis(bufnr) == 'AI 1 issue'
  end, 'the analysis on save') then return end

  -- An answer whose issue quotes code that is not there: no diagnostic, and the status says so.
  before = published()
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, vim.split(plan.clean_text, '\n', { trimempty = true }))
  if not wait(plan.diagnostic_timeout_ms, function()
    return published() > before and ai.analysis(bufnr) == 'AI no issues'
  end, 'the analysis of the edit') then return end
  ai.exec(ai.commands.status, nil, function(result) obs.results.status = result end)
  if not wait(10000, function() return obs.results.status ~= nil end, 'the status') then return end

  -- :AiLspStatus: the cancelled run's checkpoint, as it stands with today's settings.
  local from = #ai.history
  vim.cmd('AiLspStatus')
  if not wait(10000, function() return #ai.history > from end, ':AiLspStatus') then return end
  obs.status_said = ai.history[#ai.history]
  timer:stop()
  finish(0, 'done')
end

h.run(run)

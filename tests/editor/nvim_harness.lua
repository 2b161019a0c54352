-- The frame every headless Neovim test script here shares (nvim_e2e, nvim_decisions, nvim_status).
--
-- It reads the plan (the JSON file AI_LSP_E2E_CONFIG names), puts the plugin on the runtimepath,
-- and ends the run exactly once, writing the script's observations to plan.out for pytest,
-- whatever happens: the story's own end, a wait that timed out (exit code 2), the global timeout
-- (3) or a Lua error in the story (4, with its traceback). A script loads it with
--   local h = dofile(vim.fs.dirname(debug.getinfo(1, 'S').source:sub(2)) .. '/nvim_harness.lua')
local M = {}

M.plan = vim.json.decode(assert(io.open(assert(os.getenv('AI_LSP_E2E_CONFIG')))):read('*a'))
vim.opt.rtp:prepend(M.plan.plugin_dir)
vim.opt.swapfile = false
vim.opt.shortmess:append('F')

M.obs = { steps = {} }
M.before_finish = nil -- function(obs): the script's last observations (message history, screen)

--- Start the observations with the script's fields; returns the table the run will write.
function M.observe(fields)
  M.obs = fields
  return fields
end

function M.now()
  local sec, usec = vim.uv.gettimeofday()
  return sec + usec / 1e6
end

function M.write_out()
  local f = assert(io.open(M.plan.out, 'w'))
  f:write(vim.json.encode(M.obs))
  f:close()
end

local finished = false
function M.finish(code, reason)
  if finished then
    return
  end
  finished = true
  M.obs.exit_code, M.obs.exit_reason, M.obs.t_end = code, reason, M.now()
  if M.before_finish then
    pcall(M.before_finish, M.obs)
  end
  M.write_out()
  pcall(vim.cmd, code == 0 and 'qall!' or ('cquit ' .. code))
  os.exit(code) -- only reached if :quit could not run from here
end

--- Wait for `cond`, polling every `interval_ms`; on timeout end the run naming `what`.
function M.wait(ms, cond, what, interval_ms)
  if not vim.wait(ms, cond, interval_ms or 50) then
    M.finish(2, 'timed out waiting for ' .. what)
    return false
  end
  return true
end

--- Run `story` once Neovim has started, under the plan's global timeout.
function M.run(story)
  vim.defer_fn(function()
    M.finish(3, 'global timeout after ' .. M.plan.timeout_ms .. ' ms')
  end, M.plan.timeout_ms)
  vim.api.nvim_create_autocmd('VimEnter', {
    once = true,
    callback = function()
      vim.schedule(function()
        local ok, err = xpcall(story, debug.traceback)
        if not ok then
          M.obs.error = err
          M.finish(4, 'lua error')
        end
      end)
    end,
  })
end

return M

// plan.js -- a Testground test plan written against the real JS SDK
// (@testground/sdk, from npm), for mixed runs with tgrun instances through
// `tgrun serve` (tests/sdk-js/run.sh).  Its keys (plan "svc", case "meet")
// are the ones tests/lua/plans/svc.lua uses, so both meet in one run.
'use strict'

const { invokeMap } = require('@testground/sdk')

// The JS SDK has no timeouts of its own: bound every wait here.
function bounded (promise, secs, what) {
  let timer
  const t = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${secs} s`)), secs * 1000)
  })
  return Promise.race([promise, t]).finally(() => clearTimeout(timer))
}

const cases = {
  meet: async (runenv, client) => {
    const total = parseInt(runenv.testInstanceParams.total || String(runenv.testInstanceCount), 10)
    const seq = await bounded(client.signalAndWait('ready', total), 60, "barrier 'ready'")
    const sub = await client.subscribe('ids')
    await bounded(client.publish('ids', { from: 'js', seq }), 30, 'publish')
    const seen = new Set()
    const read = (async () => {
      for await (const v of sub.wait) {
        seen.add(`${v.from}:${v.seq}`)
        if (seen.size === total) break
      }
    })()
    await bounded(read, 60, `reading ${total} values of topic 'ids'`)
    sub.cancel()
    if (seen.size !== total) throw new Error(`read ${seen.size} distinct values of ${total}`)
    await bounded(client.signalAndWait('done', total), 60, "barrier 'done'")
    runenv.recordMessage(`met ${total}: ${[...seen].sort().join(' ')}`)
  },
  // (the client parameter matters: the SDK connects to the sync service,
  // and so reports the outcome in run_events, only for a case function that
  // declares two parameters)
  fail: async (runenv, client) => {
    throw new Error('deliberate js failure')
  }
}

invokeMap(cases)

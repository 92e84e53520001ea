// Sends one call of every type through a vendor's own Node SDK, with its defaults, then flushes.
//   node node_sdks.cjs segment|rudderstack <host> <write key> <user id>
// Exits 0 once the SDK reports the flush done; any error the SDK raises exits 1 with it.
'use strict'

const [sdk, host, writeKey, userId] = process.argv.slice(2)

const calls = [
  ['track', { userId, event: 'Order Completed', properties: { revenue: 12.5, currency: 'EUR' } }],
  ['identify', { userId, traits: { plan: 'pro' } }],
  ['page', { userId, name: 'Pricing', properties: { path: '/pricing' } }],
  ['screen', { userId, name: 'Home' }],
  ['group', { userId, groupId: 'g-1', traits: { name: 'Acme' } }],
  ['alias', { userId, previousId: `${userId}-anon` }],
]

async function segment () {
  const { Analytics } = require('@segment/analytics-node')
  const analytics = new Analytics({ writeKey, host })
  const failures = []
  analytics.on('error', (err) => failures.push(err))
  for (const [method, args] of calls) analytics[method](args)
  await analytics.closeAndFlush({ timeout: 20000 })
  if (failures.length) throw new Error(`segment: ${failures.map(String).join('; ')}`)
}

async function rudderstack () {
  const Analytics = require('@rudderstack/rudder-sdk-node')
  const failures = []
  // Its defaults (gzip on); errorHandler only records what the SDK reports.
  const client = new Analytics(writeKey, { dataPlaneUrl: host, errorHandler: (err) => failures.push(err) })
  for (const [method, args] of calls) client[method](args)
  // Its first call is flushed at once, alone; flush until the queue and the last request are done.
  await client.flush()
  while (client.queue.length) await client.flush()
  if (client.pendingFlush) await client.pendingFlush
  if (failures.length) throw new Error(`rudderstack: ${failures.map(String).join('; ')}`)
}

const run = { segment, rudderstack }[sdk]
run().then(() => process.exit(0), (err) => { console.error(String(err && err.stack || err)); process.exit(1) })

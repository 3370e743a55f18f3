// The forwarding suite again on `engine: node` (node:http + undici), which
// also serves whatever the fast engine hands over.
process.env.SWITCHYARD_TEST_ENGINE = 'node'
await import('./forwarding.test.js')

import t from 'tap'
import { OpenList, type OpenExchange } from '../src/upstream/color-stats.js'

const item = (closed: string[], name: string, list: OpenList): OpenExchange => {
  const x: OpenExchange = { prevOpen: undefined, nextOpen: undefined, close: () => { closed.push(name); list.delete(x) } }
  return x
}

t.test('open exchanges: add and delete anywhere, iterate while closing', async (t) => {
  const list = new OpenList()
  const closed: string[] = []
  const [a, b, c] = ['a', 'b', 'c'].map((n) => item(closed, n, list))
  for (const x of [a, b, c]) list.add(x)
  t.equal(list.size, 3)
  list.delete(b)
  t.equal(list.size, 2, 'from the middle')
  list.delete(b)
  t.equal(list.size, 2, 'deleting twice is harmless')
  list.delete(item(closed, 'stranger', list))
  t.equal(list.size, 2, 'so is deleting what was never added')
  t.same([...list], [c, a], 'newest first')
  for (const x of list) x.close()
  t.same(closed, ['c', 'a'])
  t.equal(list.size, 0)
  t.same([...list], [])
  list.add(b)
  list.delete(b)
  t.equal(list.size, 0, 'the head itself')
  t.equal(b.nextOpen, undefined)
})

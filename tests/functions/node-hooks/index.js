// Hook ordering: before-snapshot LIFO once at publish, after-restore FIFO per clone.
const { registerBeforeSnapshot, registerAfterRestore } = require('snapstart-hooks');

const order = [];
const seen = {};
let ready = false;

registerBeforeSnapshot(() => { order.push('b1'); console.log('hook b1'); });
registerBeforeSnapshot(async () => {
  await new Promise((resolve) => setTimeout(resolve, 5));   // async hooks are awaited
  order.push('b2');
  console.log('hook b2');
});
registerAfterRestore((tag) => {
  order.push(tag);
  console.log('hook a1');
  seen.random_in_hook = Math.random();
}, 'a1');
registerAfterRestore(async () => {
  await Promise.resolve();
  order.push('a2');
  ready = true;
  console.log('hook a2');
});

exports.handler = async () => ({ order, ready, ...seen });

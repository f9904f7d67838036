/** Runs async tasks one at a time, in the order they were handed in. */

/** Returns a function that queues `fn` behind every earlier task; one failure does not block the rest. */
export function serializer(): <T>(fn: () => Promise<T>) => Promise<T> {
  let chain: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>) => {
    const run = chain.then(fn, fn);
    chain = run.catch(() => {});
    return run;
  };
}

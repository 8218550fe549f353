/** The arithmetic mean; NaN for an empty list. */
export function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return s / xs.length;
}

/** The mean of the finite values only (NaN, ±Infinity left out); NaN when there are none. */
export function finiteMean(xs: readonly number[]): number {
  return mean(xs.filter(Number.isFinite));
}

/** Unbiased (n−1) standard deviation; NaN for fewer than 2 values. */
export function sampleStd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) * (x - m);
  return Math.sqrt(s / (xs.length - 1));
}

/** Standard error of the mean, from the unbiased standard deviation; NaN for fewer than 2 values. */
export function standardError(xs: readonly number[]): number {
  return sampleStd(xs) / Math.sqrt(xs.length);
}

declare module 'snappyjs' {
  /** Uncompress a raw snappy block. */
  export function uncompress<T extends Buffer | Uint8Array | ArrayBuffer>(input: T): T;
  export function compress<T extends Buffer | Uint8Array | ArrayBuffer>(input: T): T;
  const snappy: { uncompress: typeof uncompress; compress: typeof compress };
  export default snappy;
}

// What the receiving and joining code needs from the transport layer (keyring, client).

export interface KeyLookup {
  /** The unpadded-base64 Ed25519 key of `serverName` with `keyId`, valid at `validAt` when given. */
  publicKey(serverName: string, keyId: string, validAt?: number): Promise<string | undefined>;
}

export interface FederationRequester {
  request<T>(destination: string, method: string, path: string, opts?: { body?: unknown; query?: Record<string, string | string[]>; timeoutMs?: number }): Promise<T>;
}

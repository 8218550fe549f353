/**
 * Which network addresses a model-chosen URL may reach. The model picks the URLs that web_fetch
 * opens, so by default loopback, private (RFC 1918, unique-local), link-local, carrier-grade NAT,
 * multicast and reserved ranges are refused, for IPv4 and IPv6 (including IPv4-mapped and NAT64
 * forms of those IPv4 ranges). `guardedLookup` checks every address a hostname resolves to, at
 * connect time, so the checked address is the one connected to (no re-resolution in between).
 */
import { BlockList, isIP } from 'node:net';
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';

const v4 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this" network
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata lives here)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  v4.addSubnet(net, prefix, 'ipv4');
}

const v6 = new BlockList();
for (const [net, prefix] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // site-local (deprecated)
  ['ff00::', 8], // multicast
  ['2001:db8::', 32], // documentation
  ['100::', 64], // discard-only
] as const) {
  v6.addSubnet(net, prefix, 'ipv6');
}

/** Expand an IPv6 text form to 8 16-bit groups (accepts a trailing dotted IPv4 part). */
function ipv6Groups(address: string): number[] | null {
  let text = address.toLowerCase();
  const zone = text.indexOf('%');
  if (zone >= 0) text = text.slice(0, zone);
  const lastColon = text.lastIndexOf(':');
  const last = text.slice(lastColon + 1);
  if (last.includes('.')) {
    const parts = last.split('.').map(Number);
    if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return null;
    const hi = ((parts[0] << 8) | parts[1]).toString(16);
    const lo = ((parts[2] << 8) | parts[3]).toString(16);
    text = `${text.slice(0, lastColon + 1)}${hi}:${lo}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const head = parse(halves[0]);
  const rest = halves.length === 2 ? parse(halves[1]) : [];
  const fill = 8 - head.length - rest.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return null;
  const groups = [...head, ...new Array<number>(fill).fill(0), ...rest];
  return groups.length === 8 && groups.every((g) => Number.isInteger(g) && g >= 0 && g <= 0xffff) ? groups : null;
}

/** The IPv4 address embedded in an IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible or NAT64 (64:ff9b::/96) address. */
function embeddedIPv4(address: string): string | null {
  const g = ipv6Groups(address);
  if (!g) return null;
  const zeros5 = g.slice(0, 5).every((x) => x === 0);
  const mapped = zeros5 && g[5] === 0xffff;
  const compatible = zeros5 && g[5] === 0 && (g[6] !== 0 || g[7] > 1);
  const nat64 = g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0);
  if (!mapped && !compatible && !nat64) return null;
  return `${g[6] >> 8}.${g[6] & 0xff}.${g[7] >> 8}.${g[7] & 0xff}`;
}

/** True when `address` (an IP literal) is loopback, private, link-local, multicast or reserved. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return v4.check(address, 'ipv4');
  if (family === 6) {
    const inner = embeddedIPv4(address);
    if (inner !== null) return v4.check(inner, 'ipv4');
    const zone = address.indexOf('%');
    return v6.check(zone >= 0 ? address.slice(0, zone) : address, 'ipv6');
  }
  return true; // not an IP address at all: refuse rather than guess
}

export interface AddressPolicy {
  /** Allow every address (the URL still needs an http(s) scheme). */
  allowPrivateNetwork?: boolean;
  /** Exact IP addresses exempt from the private-network refusal (e.g. a local mirror). */
  allowedAddresses?: readonly string[];
}

/** Why `address` may not be contacted under `policy`, or null when it may. */
export function refusalReason(address: string, policy: AddressPolicy): string | null {
  if (policy.allowPrivateNetwork) return null;
  if (policy.allowedAddresses?.includes(address)) return null;
  if (isPrivateAddress(address)) return `address ${address} is loopback, private, link-local or reserved (not allowed)`;
  return null;
}

export class RefusedAddressError extends Error {}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for node:http/https/net that resolves with dns.lookup, refuses the connection when any
 * resolved address is not allowed, and otherwise connects to exactly the checked addresses.
 */
export function guardedLookup(policy: AddressPolicy) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 0);
      const list = addresses as LookupAddress[];
      for (const a of list) {
        const reason = refusalReason(a.address, policy);
        if (reason) return callback(new RefusedAddressError(`${hostname} resolves to ${reason}`), '', 0);
      }
      if (list.length === 0) return callback(Object.assign(new Error(`${hostname}: no addresses`), { code: 'ENOTFOUND' }), '', 0);
      if (options.all) callback(null, list);
      else callback(null, list[0].address, list[0].family);
    });
  };
}

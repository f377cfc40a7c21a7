import GRPCNIOTransportHTTP2

extension ListenAddress {
    /// The address a gRPC server binds: IPv6 when the host has a colon, `localhost` as
    /// 127.0.0.1 (the transport does not resolve names for a listener).
    public var grpcBindAddress: GRPCNIOTransportCore.SocketAddress {
        host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host == "localhost" ? "127.0.0.1" : host, port: port)
    }
}

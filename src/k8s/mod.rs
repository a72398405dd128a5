//! The Kubernetes adapters both roles use: the first contact with the API
//! server ([`startup`]), the [`api_contact`] clock every watch and request
//! sets, the leader [`election`] every agent takes part in, the watches on
//! the agent's own Node and kubelet Lease ([`own_node`]), and the pure
//! conversions from Kubernetes objects to the core's observations
//! ([`facts`]).

pub mod api_contact;
pub mod election;
pub mod facts;
pub mod own_node;
pub mod permit_object;
pub mod startup;

pub use api_contact::ApiContact;

/// The namespace of the kubelets' node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Whether an API error is a `Status` with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

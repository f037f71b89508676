//! Cluster administration from outside the cluster: what replicas each node hosts
//! (`cluster status`), and the replacement of a lost node (`cluster replace`), made as a
//! series of single configuration changes at each group's leader, the way the simulator's
//! control plane makes them (tests/src/sim).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tessera_engine::paxos::{Member, MemberKind};
use tessera_net::{partition_name, ClusterNode};
use tessera_wire::client::{Client, ClientConfig};
use tessera_wire::{ReplicaStatus, Request, Response};

/// Which node is lost, and where its replacements go.
#[derive(Clone, Copy, Debug)]
pub struct Replacement {
    /// Gone for good: removed from every group it is in.
    pub lost: u32,
    /// Hosts a log replica of each of those groups meanwhile.
    pub log: u32,
    /// Hosts the new full replica of each.
    pub full: u32,
}

/// Slots the new full replica may trail its leader's commit by when the log replica goes.
const CAUGHT_UP_SLOTS: u64 = 64;
/// Between two looks at the cluster.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

/// One node's client (`config`: a short timeout and no retries, so that a node that does not
/// answer is skipped this round; the cluster's secret).
fn connect(node: &ClusterNode, config: &ClientConfig) -> Option<Client> {
    Client::connect_with(node.client, config.clone()).ok()
}

/// The replicas of every node that answers, by node.
fn describe(nodes: &BTreeMap<u32, ClusterNode>, config: &ClientConfig) -> BTreeMap<u32, Vec<ReplicaStatus>> {
    let mut reports = BTreeMap::new();
    for (&id, node) in nodes {
        if let Some(Ok(Response::Replicas { replicas, .. })) =
            connect(node, config).map(|mut client| client.call(&Request::DescribeReplicas))
        {
            reports.insert(id, replicas);
        }
    }
    reports
}

/// Members as `1,3,L4` (a log replica marked L).
fn members_text(members: &[Member]) -> String {
    let text: Vec<String> = members
        .iter()
        .map(|member| match member.kind {
            MemberKind::Full => member.id.to_string(),
            MemberKind::Log => format!("L{}", member.id),
        })
        .collect();
    text.join(",")
}

/// `cluster status`: every replica each reachable node hosts.
pub fn status(nodes: &BTreeMap<u32, ClusterNode>, config: &ClientConfig) -> Result<(), String> {
    let reports = describe(nodes, config);
    for id in nodes.keys().filter(|id| !reports.contains_key(id)) {
        println!("node {id}: not answering");
    }
    for (node, replicas) in &reports {
        for replica in replicas {
            let leader = replica.leader.map_or("none".to_string(), |leader| leader.to_string());
            println!(
                "node {node}: {}: leader {leader}{}, members {}{}, commit {}, applied {}",
                partition_name(replica.partition),
                if replica.leading { " (here)" } else { "" },
                members_text(&replica.members),
                if replica.members_committed { "" } else { " (not committed yet)" },
                replica.commit,
                replica.applied
            );
        }
    }
    Ok(())
}

/// What a group needs next, as its leader reports it.
enum Step {
    Change(Vec<Member>, &'static str),
    /// The new full replica is catching up, or cannot be seen.
    Wait,
    Done,
}

/// What the group `leader` reports on needs next. A node is added only while it answers: a
/// member that is down from the start would only make the group's quorum harder to reach.
fn next_step(
    leader: &ReplicaStatus,
    plan: Replacement,
    full: Option<&ReplicaStatus>,
    answering: impl Fn(u32) -> bool,
) -> Step {
    let Replacement { lost, log, full: new } = plan;
    let has = |id: u32| leader.members.iter().any(|member| member.id == id);
    let mut next = leader.members.clone();
    if has(lost) && !has(log) {
        if !answering(log) {
            return Step::Wait;
        }
        next.push(Member::log(log));
        Step::Change(next, "log replica added")
    } else if has(lost) {
        next.retain(|member| member.id != lost);
        Step::Change(next, "lost replica removed")
    } else if !has(new) {
        if !answering(new) {
            return Step::Wait;
        }
        next.push(Member::full(new));
        Step::Change(next, "full replica added")
    } else if has(log) {
        // The new replica knows it is a full member and applied about what is committed.
        let caught_up = full.is_some_and(|full| {
            full.members.contains(&Member::full(new)) && full.applied + CAUGHT_UP_SLOTS >= leader.commit
        });
        match caught_up {
            true => {
                next.retain(|member| member.id != log);
                Step::Change(next, "log replica removed")
            }
            false => Step::Wait,
        }
    } else {
        Step::Done
    }
}

/// `cluster replace`: removes `plan.lost` from every group it is in and gives each group a new
/// full replica on `plan.full`, keeping a log replica on `plan.log` in the group meanwhile so
/// that the group has three durable copies of every write throughout. One configuration change
/// at a time per group, each at its leader once the previous one is committed; then the log
/// replicas are retired. Idempotent: run again, it carries on from where the groups are.
pub fn replace(
    nodes: &BTreeMap<u32, ClusterNode>,
    plan: Replacement,
    timeout: Duration,
    config: &ClientConfig,
) -> Result<(), String> {
    let Replacement { lost, log, full } = plan;
    if lost == log || lost == full || log == full {
        return Err("--lost, --log and --full must name three different nodes".into());
    }
    let deadline = Instant::now() + timeout;
    let reachable: BTreeMap<u32, ClusterNode> =
        nodes.iter().filter(|(&id, _)| id != lost).map(|(&id, node)| (id, node.clone())).collect();
    // Groups seen with the lost node or the log replica in them: the work to do.
    let mut involved = BTreeSet::new();
    loop {
        let reports = describe(&reachable, config);
        let mut leaders: BTreeMap<u64, (u32, &ReplicaStatus)> = BTreeMap::new();
        for (&node, replicas) in &reports {
            for replica in replicas {
                if replica.members.iter().any(|member| member.id == lost || member.id == log) {
                    involved.insert(replica.partition);
                }
                if replica.leading {
                    leaders.insert(replica.partition, (node, replica));
                }
            }
        }
        let hosted = |node: u32, partition: u64| {
            reports.get(&node).and_then(|replicas| replicas.iter().find(|replica| replica.partition == partition))
        };
        let mut unfinished = 0;
        for &partition in &involved {
            let Some(&(leader, status)) = leaders.get(&partition) else {
                unfinished += 1;
                continue;
            };
            if !status.members_committed {
                unfinished += 1;
                continue;
            }
            match next_step(status, plan, hosted(full, partition), |node| reports.contains_key(&node)) {
                Step::Change(members, what) => {
                    unfinished += 1;
                    let request = Request::ChangeMembers { partition, members: members.clone() };
                    match connect(&nodes[&leader], config).map(|mut client| client.call(&request)) {
                        Some(Ok(Response::Admin { slot })) => println!(
                            "{}: {what}: members {} from slot {slot}",
                            partition_name(partition),
                            members_text(&members)
                        ),
                        // Another round sees where the group is.
                        Some(Ok(Response::Error(error))) => {
                            eprintln!("{}: {what}: {}", partition_name(partition), error.message)
                        }
                        _ => {}
                    }
                }
                Step::Wait => unfinished += 1,
                // The log replica's leader no longer sends it anything: it is retired by hand.
                Step::Done if hosted(log, partition).is_some() => {
                    unfinished += 1;
                    let request = Request::RetireReplica { partition };
                    if let Some(Ok(Response::Admin { .. })) =
                        connect(&nodes[&log], config).map(|mut client| client.call(&request))
                    {
                        println!("{}: log replica on node {log} retired", partition_name(partition));
                    }
                }
                Step::Done => {}
            }
        }
        if unfinished == 0 && !reports.is_empty() {
            match involved.len() {
                0 => println!("no group has node {lost} or node {log} in it: nothing to do"),
                groups => println!("node {lost} replaced by node {full} in {groups} groups"),
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{unfinished} of {} groups are not done after {timeout:?} (is a quorum of each up, and node {full}?); run again to carry on",
                involved.len()
            ));
        }
        std::thread::sleep(ROUND_PAUSE);
    }
}

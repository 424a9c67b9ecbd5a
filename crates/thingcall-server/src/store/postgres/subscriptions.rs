//! Consumer groups, subscriptions and backlogs in PostgreSQL, on pooled
//! connections. Backlog writes come from one writer at a time (the
//! server's backlog task), each in one transaction.

use thingcall_amqp::Queued;

use super::Store;
use super::error::{from_pg, from_pool};
use crate::store::{
    BacklogRow, ConsumerGroup, StoreError, StoreErrorKind, Subscription, SubscriptionSnapshot,
    Subscriptions, names_from_json, names_to_json,
};

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait::async_trait]
impl Subscriptions for Store {
    async fn load_subscriptions(&self) -> Result<SubscriptionSnapshot, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let groups = client
            .query(
                "SELECT group_id, group_name, created_ms FROM consumer_groups ORDER BY created_ms, group_id",
                &[],
            )
            .await
            .map_err(from_pg)?
            .into_iter()
            .map(|r| ConsumerGroup {
                group_id: r.get(0),
                name: r.get(1),
                created_ms: r.get(2),
            })
            .collect();
        let mut subscriptions = Vec::new();
        for r in client
            .query(
                "SELECT product_key, kind, flags, group_ids, mns, subscribe_flags, created_ms FROM subscriptions",
                &[],
            )
            .await
            .map_err(from_pg)?
        {
            let flags: String = r.get(2);
            let group_ids: String = r.get(3);
            subscriptions.push(Subscription {
                product_key: r.get(0),
                kind: r.get(1),
                flags: names_from_json(&flags)?,
                group_ids: names_from_json(&group_ids)?,
                mns: r.get(4),
                subscribe_flags: r.get(5),
                created_ms: r.get(6),
            });
        }
        let last: Option<i64> = client
            .query_one("SELECT max(seq) FROM amqp_backlog", &[])
            .await
            .map_err(from_pg)?
            .get(0);
        Ok(SubscriptionSnapshot {
            groups,
            subscriptions,
            last_seq: last.map_or(0, to_u64),
        })
    }

    async fn put_group(&self, group: ConsumerGroup, create: bool) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let n = if create {
            client
                .execute(
                    "INSERT INTO consumer_groups (group_id, group_name, created_ms) VALUES ($1, $2, $3)",
                    &[&group.group_id, &group.name, &group.created_ms],
                )
                .await
        } else {
            client
                .execute(
                    "UPDATE consumer_groups SET group_name = $2 WHERE group_id = $1",
                    &[&group.group_id, &group.name],
                )
                .await
        }
        .map_err(from_pg)?;
        if n == 0 {
            return Err(StoreError::new(
                StoreErrorKind::NotFound,
                "no such consumer group",
            ));
        }
        Ok(())
    }

    async fn delete_group(&self, group_id: String) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(from_pool)?;
        let tx = client.transaction().await.map_err(from_pg)?;
        tx.execute("DELETE FROM amqp_backlog WHERE group_id = $1", &[&group_id])
            .await
            .map_err(from_pg)?;
        tx.execute(
            "DELETE FROM consumer_groups WHERE group_id = $1",
            &[&group_id],
        )
        .await
        .map_err(from_pg)?;
        tx.commit().await.map_err(from_pg)
    }

    async fn put_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .execute(
                "INSERT INTO subscriptions (product_key, kind, flags, group_ids, mns, subscribe_flags, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (product_key, kind) DO UPDATE SET flags = excluded.flags,
                   group_ids = excluded.group_ids, mns = excluded.mns,
                   subscribe_flags = excluded.subscribe_flags",
                &[
                    &s.product_key,
                    &s.kind,
                    &names_to_json(&s.flags),
                    &names_to_json(&s.group_ids),
                    &s.mns,
                    &s.subscribe_flags,
                    &s.created_ms,
                ],
            )
            .await
            .map_err(from_pg)
            .map(|_| ())
    }

    async fn delete_subscription(
        &self,
        product_key: String,
        kind: String,
    ) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        client
            .execute(
                "DELETE FROM subscriptions WHERE product_key = $1 AND kind = $2",
                &[&product_key, &kind],
            )
            .await
            .map_err(from_pg)
            .map(|_| ())
    }

    async fn write_backlog(
        &self,
        rows: Vec<BacklogRow>,
        acks: Vec<(String, u64)>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(from_pool)?;
        let tx = client.transaction().await.map_err(from_pg)?;
        if !rows.is_empty() {
            let mut groups = Vec::with_capacity(rows.len());
            let mut seqs = Vec::with_capacity(rows.len());
            let mut keys = Vec::with_capacity(rows.len());
            let mut topics = Vec::with_capacity(rows.len());
            let mut ids = Vec::with_capacity(rows.len());
            let mut times = Vec::with_capacity(rows.len());
            let mut bodies = Vec::with_capacity(rows.len());
            for r in rows {
                groups.push(r.group_id);
                seqs.push(to_i64(r.message.seq));
                keys.push(r.message.key);
                topics.push(r.message.topic);
                ids.push(to_i64(r.message.message_id));
                times.push(r.message.generate_ms);
                bodies.push(r.message.body);
            }
            tx.execute(
                "INSERT INTO amqp_backlog (group_id, seq, key, topic, message_id, generate_ms, body)
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::bytea[])
                 ON CONFLICT DO NOTHING",
                &[&groups, &seqs, &keys, &topics, &ids, &times, &bodies],
            )
            .await
            .map_err(from_pg)?;
        }
        if !acks.is_empty() {
            let (groups, seqs): (Vec<String>, Vec<i64>) =
                acks.into_iter().map(|(g, s)| (g, to_i64(s))).unzip();
            tx.execute(
                "DELETE FROM amqp_backlog b USING unnest($1::text[], $2::int8[]) AS a(g, s)
                 WHERE b.group_id = a.g AND b.seq = a.s",
                &[&groups, &seqs],
            )
            .await
            .map_err(from_pg)?;
        }
        tx.commit().await.map_err(from_pg)
    }

    async fn read_backlog(
        &self,
        group_id: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(client
            .query(
                "SELECT seq, key, topic, message_id, generate_ms, body FROM amqp_backlog
                 WHERE group_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&group_id, &to_i64(after), &limit],
            )
            .await
            .map_err(from_pg)?
            .into_iter()
            .map(|r| Queued {
                seq: to_u64(r.get(0)),
                key: r.get(1),
                topic: r.get(2),
                message_id: to_u64(r.get(3)),
                generate_ms: r.get(4),
                body: r.get(5),
            })
            .collect())
    }

    async fn backlog_len(&self, group_id: String) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM amqp_backlog WHERE group_id = $1",
                &[&group_id],
            )
            .await
            .map_err(from_pg)?
            .get(0);
        Ok(to_u64(n))
    }

    async fn purge_backlog(
        &self,
        group_id: Option<String>,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await.map_err(from_pool)?;
        match group_id {
            Some(g) => {
                client
                    .execute("DELETE FROM amqp_backlog WHERE group_id = $1", &[&g])
                    .await
            }
            None => {
                client
                    .execute(
                        "DELETE FROM amqp_backlog WHERE generate_ms < $1",
                        &[&before_ms],
                    )
                    .await
            }
        }
        .map_err(from_pg)
    }
}

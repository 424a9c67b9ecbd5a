//! Consumer groups, subscriptions and backlogs in SQLite: writes through
//! the writer thread (so a backlog write commits in order with every other
//! write), reads on the read connection.

use rusqlite::{Connection, OptionalExtension, params};
use thingcall_amqp::Queued;

use super::Store;
use crate::store::{
    BacklogRow, ConsumerGroup, StoreError, Subscription, SubscriptionSnapshot, Subscriptions,
    names_from_json, names_to_json,
};

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn load(conn: &Connection) -> rusqlite::Result<SubscriptionSnapshot> {
    let mut groups = Vec::new();
    let mut stmt =
        conn.prepare("SELECT group_id, group_name, created_ms FROM consumer_groups ORDER BY created_ms, group_id")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        groups.push(ConsumerGroup {
            group_id: r.get(0)?,
            name: r.get(1)?,
            created_ms: r.get(2)?,
        });
    }
    let mut subscriptions = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT product_key, kind, flags, group_ids, mns, subscribe_flags, created_ms FROM subscriptions",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let flags: String = r.get(2)?;
        let group_ids: String = r.get(3)?;
        let corrupt = |e: StoreError| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
        };
        subscriptions.push(Subscription {
            product_key: r.get(0)?,
            kind: r.get(1)?,
            flags: names_from_json(&flags).map_err(corrupt)?,
            group_ids: names_from_json(&group_ids).map_err(corrupt)?,
            mns: r.get(4)?,
            subscribe_flags: r.get(5)?,
            created_ms: r.get(6)?,
        });
    }
    let last: Option<i64> = conn
        .query_row("SELECT max(seq) FROM amqp_backlog", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(SubscriptionSnapshot {
        groups,
        subscriptions,
        last_seq: last.map_or(0, to_u64),
    })
}

#[async_trait::async_trait]
impl Subscriptions for Store {
    async fn load_subscriptions(&self) -> Result<SubscriptionSnapshot, StoreError> {
        self.read(load).await
    }

    async fn put_group(&self, group: ConsumerGroup, create: bool) -> Result<(), StoreError> {
        let changed = self
            .write(move |conn| {
                if create {
                    conn.execute(
                        "INSERT INTO consumer_groups (group_id, group_name, created_ms) VALUES (?1, ?2, ?3)",
                        params![group.group_id, group.name, group.created_ms],
                    )
                } else {
                    conn.execute(
                        "UPDATE consumer_groups SET group_name = ?2 WHERE group_id = ?1",
                        params![group.group_id, group.name],
                    )
                }
            })
            .await?;
        if changed == 0 {
            return Err(StoreError::new(
                crate::store::StoreErrorKind::NotFound,
                "no such consumer group",
            ));
        }
        Ok(())
    }

    async fn delete_group(&self, group_id: String) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute("DELETE FROM amqp_backlog WHERE group_id = ?1", [&group_id])?;
            conn.execute(
                "DELETE FROM consumer_groups WHERE group_id = ?1",
                [&group_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn put_subscription(&self, s: Subscription) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO subscriptions (product_key, kind, flags, group_ids, mns, subscribe_flags, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (product_key, kind) DO UPDATE SET flags = excluded.flags,
                   group_ids = excluded.group_ids, mns = excluded.mns,
                   subscribe_flags = excluded.subscribe_flags",
                params![
                    s.product_key,
                    s.kind,
                    names_to_json(&s.flags),
                    names_to_json(&s.group_ids),
                    s.mns,
                    s.subscribe_flags,
                    s.created_ms
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn delete_subscription(
        &self,
        product_key: String,
        kind: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM subscriptions WHERE product_key = ?1 AND kind = ?2",
                params![product_key, kind],
            )
            .map(|_| ())
        })
        .await
    }

    async fn write_backlog(
        &self,
        rows: Vec<BacklogRow>,
        acks: Vec<(String, u64)>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            {
                let mut insert = conn.prepare_cached(
                    "INSERT OR IGNORE INTO amqp_backlog (group_id, seq, key, topic, message_id, generate_ms, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for r in &rows {
                    let m = &r.message;
                    insert.execute(params![
                        r.group_id,
                        to_i64(m.seq),
                        m.key,
                        m.topic,
                        to_i64(m.message_id),
                        m.generate_ms,
                        m.body
                    ])?;
                }
            }
            let mut delete =
                conn.prepare_cached("DELETE FROM amqp_backlog WHERE group_id = ?1 AND seq = ?2")?;
            for (group, seq) in &acks {
                delete.execute(params![group, to_i64(*seq)])?;
            }
            Ok(())
        })
        .await
    }

    async fn read_backlog(
        &self,
        group_id: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, key, topic, message_id, generate_ms, body FROM amqp_backlog
                 WHERE group_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![
                group_id,
                to_i64(after),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(Queued {
                    seq: to_u64(r.get(0)?),
                    key: r.get(1)?,
                    topic: r.get(2)?,
                    message_id: to_u64(r.get(3)?),
                    generate_ms: r.get(4)?,
                    body: r.get(5)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn backlog_len(&self, group_id: String) -> Result<u64, StoreError> {
        self.read(move |conn| {
            conn.query_row(
                "SELECT count(*) FROM amqp_backlog WHERE group_id = ?1",
                [group_id],
                |r| r.get::<_, i64>(0),
            )
            .map(to_u64)
        })
        .await
    }

    async fn purge_backlog(
        &self,
        group_id: Option<String>,
        before_ms: i64,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let n = match group_id {
                Some(g) => conn.execute("DELETE FROM amqp_backlog WHERE group_id = ?1", [g])?,
                None => conn.execute(
                    "DELETE FROM amqp_backlog WHERE generate_ms < ?1",
                    [before_ms],
                )?,
            };
            Ok(n as u64)
        })
        .await
    }
}
